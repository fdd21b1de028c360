"""Notice variants by jurisdiction, enforced in the rendered notices (MA, IL, CA, monitoring)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from click.testing import CliRunner

from notify import campaigns, db
from notify.cli import main
from notify.models import Contact
from notify.rules.variants import html_text, notice_rules, verify, verify_notices
from notify.templates import ContactView, Notices
from tests.factories import EXAMPLE

CONFIG = campaigns.parse_campaign_file(EXAMPLE)
DESCRIPTION = CONFIG.description


def person(state: str | None, *kinds: str, country: str | None = "US") -> ContactView:
    return ContactView(
        key="K-1",
        name="Pat Doe",
        email="pat@example.com",
        phone="+14155550100",
        exposures=list(kinds),
        extra={},
        country=country,
        state=state,
        enrollment_code="MON-7",
    )


def bodies(notices: Notices, view: ContactView) -> list[str]:
    mail = notices.render_email(view, reset_url="https://acme.example/reset?token=T")
    return [mail.text, html_text(mail.html)]


@pytest.fixture(scope="module")
def notices():
    return Notices(CONFIG, None)


def test_massachusetts_notice_leaves_out_the_nature_and_adds_police_report_and_free_freeze(notices):
    for body in bodies(notices, person("MA", "identity", "card")):
        assert DESCRIPTION[:60] not in body  # the nature of the breach
        assert "right to obtain a police report" in body
        assert "security freeze" in body and "There is no charge" in body
        assert "What Happened" in body
        assert not verify(
            notice_rules("US-MA", ("identity", "card"), 24), body, description=DESCRIPTION
        )
    # Everyone else reads what happened, and no Massachusetts paragraphs.
    for body in bodies(notices, person("NY", "identity", "card")):
        assert DESCRIPTION[:60] in body
        assert "police report" not in body and "no charge" not in body.lower()


def test_the_check_catches_a_notice_that_breaks_the_massachusetts_rules(notices):
    rules = notice_rules("US-MA", ("card",), 0)
    text = f"Notice of Data Breach\nWhat Happened\n{DESCRIPTION}\nIt affected 1,204 residents."
    problems = verify(rules, text, description=DESCRIPTION)
    assert any("must not describe the nature" in p for p in problems)
    assert any("must not state the number" in p and "1,204 residents" in p for p in problems)
    assert any("police report" in p for p in problems)
    assert any("no charge" in p for p in problems)


def test_illinois_notice_never_states_the_count(notices, tmp_path):
    rules = notice_rules("US-IL", ("card",), 0)
    for body in bodies(notices, person("IL", "card")):
        assert DESCRIPTION[:60] in body  # Illinois allows the nature
        assert not verify(rules, body, description=DESCRIPTION)
    counted = replace(CONFIG, description="The breach affected 3,120 Illinois residents.")
    problems = verify_notices(Notices(counted, None), {"US-IL": {("card",)}})
    assert any(
        "must not state the number of residents" in p and "3,120 Illinois residents" in p
        for p in problems["US-IL"]
    )
    # The same description is fine where the law does not forbid the count.
    assert verify_notices(Notices(counted, None), {"US-NY": {("card",)}}) == {}


def test_california_notice_has_its_title_and_headings_and_a_credentials_only_form(notices):
    for body in bodies(notices, person("CA", "identity", "passwords")):
        for heading in (
            "Notice of Data Breach",
            "What Happened",
            "What Information Was Involved",
            "What We Are Doing",
            "What You Can Do",
            "For More Information",
        ):
            assert heading in body
    short = bodies(notices, person("CA", "passwords"))
    for body in short:
        assert "Notice of Data Breach" in body
        assert "change your password now" in body.lower()
        assert "any other account" in body
        assert "What Information Was Involved" not in body
        assert not verify(notice_rules("US-CA", ("passwords",), 0), body)
    # Elsewhere a passwords-only breach gets the full notice.
    assert "What Information Was Involved" in bodies(notices, person("NV", "passwords"))[0]


def test_monitoring_months_follow_the_strictest_rule(notices):
    offer12 = Notices(
        replace(
            CONFIG,
            credit_monitoring={
                "provider": "Experian",
                "months": 12,
                "enroll_url": "https://e.example/enroll",
            },
        ),
        None,
    )
    expected = {"CT": 24, "DC": 18, "MA": 18, "DE": 12, "CA": 12, "TX": 12}
    for state, months in expected.items():
        text = offer12.render_email(person(state, "identity")).text
        assert f"{months} months of credit monitoring" in text, state
        assert "Your enrollment code is MON-7." in text
        assert "https://e.example/enroll" in text


def test_an_override_that_offers_fewer_months_fails_the_check(tmp_path):
    folder = tmp_path / "notices" / "identity"
    folder.mkdir(parents=True)
    (folder / "email.txt.j2").write_text(
        '{% extends "defaults/identity/email.txt.j2" %}{% block first_step %}\n'
        "We offer 12 months of credit monitoring.\n{% endblock %}\n"
    )
    (tmp_path / "notices" / "_shared").mkdir()
    (tmp_path / "notices" / "_shared" / "notice.txt.j2").write_text(
        (EXAMPLE.parent.parent / "templates" / "_shared" / "notice.txt.j2")
        .read_text()
        .replace("{{ rules.monitoring_months }} months", "12 months")
    )
    (tmp_path / "notices" / "_shared" / "advice").mkdir()
    (tmp_path / "notices" / "_shared" / "advice" / "identity.txt.j2").write_text(
        "Your identity\nFreeze your credit.\n"
    )
    (tmp_path / "notices" / "_shared" / "notice.html.j2").write_text(
        (EXAMPLE.parent.parent / "templates" / "_shared" / "notice.html.j2")
        .read_text()
        .replace("{{ rules.monitoring_months }} months", "12 months")
    )
    offer = replace(
        CONFIG,
        credit_monitoring={
            "provider": "Experian",
            "months": 12,
            "enroll_url": "https://e.example/enroll",
        },
    )
    found = verify_notices(
        Notices(offer, tmp_path / "notices"), {"US-CT": {("identity",)}, "US-TX": {("identity",)}}
    )
    assert "US-TX" not in found
    assert any('does not offer "24 months"' in p for p in found["US-CT"])


def test_identity_notice_promises_monitoring_only_when_the_campaign_offers_it(notices):
    view = person("NV", "identity")
    with_offer = notices.render_email(view)
    assert "credit monitoring" in with_offer.text and "Experian IdentityWorks" in with_offer.text
    assert "credit monitoring" in notices.render_sms(view).text
    bare = Notices(replace(CONFIG, credit_monitoring=None), None)
    mail, sms = bare.render_email(view), bare.render_sms(view)
    for body in (mail.text, html_text(mail.html), sms.text):
        assert "monitoring" not in body.lower()
        assert "enrollment code" not in body.lower()
    assert "credit freeze" in mail.text  # the advice that needs no offer stays
    assert not bare.check()


# --- through the commands ------------------------------------------------------------------


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_templates_check_renders_the_variants_the_campaign_contacts_need(env, campaign_file):
    folder = campaign_file.parent / "notices" / "_shared"
    folder.mkdir(parents=True)
    # An override that prints what happened whatever the jurisdiction.
    (folder / "notice.txt.j2").write_text(
        (EXAMPLE.parent.parent / "templates" / "_shared" / "notice.txt.j2")
        .read_text()
        .replace("{% if rules.omit_nature %}", "{% if false %}")
    )
    campaign_file.write_text(
        campaign_file.read_text().replace("[throttle]", 'templates = "notices"\n\n[throttle]')
    )
    assert run("campaign", "load", str(campaign_file)).exit_code == 0
    assert run("templates", "check", "--campaign", "acme-2026-11").exit_code == 0  # no MA yet
    engine = db.connect(env["NOTIFY_DATABASE_URL"])
    with db.session_scope(engine) as session:
        campaign = campaigns.get_campaign(session, "acme-2026-11")
        session.add(
            Contact(
                campaign_id=campaign.id,
                key="ma-1",
                email="m@example.com",
                country="US",
                state="MA",
                exposures="card",
                extra={},
            )
        )
    result = run("templates", "check", "--campaign", "acme-2026-11")
    assert result.exit_code == 1
    assert (
        "[US-MA, card] email text: Massachusetts notices must not describe the nature"
        in result.output
    )
    rules_result = run("rules", "check", "acme-2026-11", "--as-of", "2026-12-01")
    assert rules_result.exit_code == 1
    assert "must not describe the nature" in rules_result.output
    assert "notice variant: US-MA (the campaign's notices do NOT meet it)" in rules_result.output
