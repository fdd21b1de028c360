// Progressive enhancement only: every page works without this script.
// Shows each <time> (and chart labels marked data-utc) in the viewer's time zone, keeping
// the UTC text in the title so hovering or focusing shows it.
(function () {
  "use strict";
  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                "Nov", "Dec"];
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function local(d, withYear) {
    return d.getDate() + " " + MONTHS[d.getMonth()] + (withYear ? " " + d.getFullYear() : "") +
      " " + pad(d.getHours()) + ":" + pad(d.getMinutes());
  }
  function zone() {
    try { return Intl.DateTimeFormat().resolvedOptions().timeZone || "local time"; }
    catch (e) { return "local time"; }
  }
  document.addEventListener("DOMContentLoaded", function () {
    var times = document.querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var t = times[i], d = new Date(t.getAttribute("datetime"));
      if (isNaN(d)) continue;
      t.title = t.textContent.trim();
      // In a verdict, a later time on the same day reads as the hour only:
      // "Reached by email on 2 Dec 2026 14:05, SMS delivered 14:06".
      var previous = t.previousElementSibling;
      var sameDay = t.parentNode.classList.contains("verdict") && previous &&
        previous.tagName === "TIME" && previous.dataset.day === d.toDateString();
      t.dataset.day = d.toDateString();
      t.textContent = sameDay ? pad(d.getHours()) + ":" + pad(d.getMinutes()) : local(d, true);
    }
    var labels = document.querySelectorAll("[data-utc]");
    for (var j = 0; j < labels.length; j++) {
      var d2 = new Date(labels[j].getAttribute("data-utc"));
      if (!isNaN(d2)) labels[j].textContent = local(d2, false);
    }
    var tz = document.querySelector("[data-tz]");
    if (tz) tz.textContent = "your time zone (" + zone() + ")";
  });
})();
