"""Notices: selection by rank, the sandbox, overrides, checks, SMS segments, MIME building."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from email import message_from_bytes
from email import policy as email_policy
from pathlib import Path

import pytest

from notify import templates as t
from notify.campaigns import CampaignConfig, parse_campaign_file
from notify.mime import MessageError, build_email, message_id_for
from notify.sms_segments import sms_encoding, sms_segments
from notify.template_versions import TemplateSetError
from notify.templates import (
    ContactView,
    Notices,
    TemplateError,
    needs_reset,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "campaigns" / "example.toml"
TOKEN = "T" * t.TOKEN_LENGTH
# One phrase from each kind's advice, and from each kind's line in "What Information ...".
ADVICE_MARKS = {
    "identity": [
        "Equifax (1-800-685-1111",
        "Experian (1-888-397-3742",
        "TransUnion (1-888-909-8872",
        "IdentityTheft.gov",
        "credit monitoring",
    ],
    "card": ["Check your card statements", "dispute", "reissue your card"],
    "passwords": ["used the same or a similar password", "two-step verification"],
}
LABEL_MARKS = {
    "identity": "Identity information",
    "card": "Payment card information",
    "passwords": "The password for your Acme Corp account",
}


@pytest.fixture(scope="module")
def config() -> CampaignConfig:
    return parse_campaign_file(EXAMPLE)


@pytest.fixture(scope="module")
def notices(config) -> Notices:
    return Notices(config, None)


@pytest.fixture
def link(config) -> str:
    return config.reset_url.replace("{token}", TOKEN)


def person(*kinds: str, name: str | None = "Jane Doe", **extra) -> ContactView:
    return ContactView(
        key="C-1",
        name=name,
        email="jane@example.com",
        phone="+14155550123",
        exposures=list(kinds),
        extra=extra,
    )


def override(tmp_path: Path, files: dict[str, str]) -> Path:
    """A campaign templates folder holding only ``files``."""
    root = tmp_path / "notices"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    root.mkdir(exist_ok=True)
    return root


# --- selection and context ------------------------------------------------------------------


def test_highest_exposure_picks_the_template_and_lists_every_kind(notices, link):
    contact = person("passwords", "card", "identity")  # any order in, rank order out
    mail = notices.render_email(contact, reset_url=link)
    sms = notices.render_sms(contact, reset_url=link)
    assert mail.template == sms.template == "identity"
    assert mail.subject == "Notice of Data Breach: your personal information at Acme Corp"
    for body in (mail.text, mail.html):
        for kind in ("identity", "card", "passwords"):
            assert LABEL_MARKS[kind] in body
            for mark in ADVICE_MARKS[kind]:
                assert mark in body, (kind, mark)
        # advice in rank order: identity, then card, then passwords
        assert (
            body.index("Your identity")
            < body.index("Your payment card")
            < body.index("Your password")
        )
    assert "identity information, payment card information and password" in sms.text


@pytest.mark.parametrize(
    "kinds, folder",
    [
        (["passwords"], "passwords"),
        (["card"], "card"),
        (["card", "passwords"], "card"),
        (["identity", "passwords"], "identity"),
    ],
)
def test_each_exposure_has_its_own_folder(notices, kinds, folder):
    assert notices.render_email(person(*kinds)).template == folder
    assert notices.render_sms(person(*kinds)).template == folder


def test_only_exposed_kinds_get_advice(notices):
    text = notices.render_email(person("card")).text
    for mark in ADVICE_MARKS["identity"] + ADVICE_MARKS["passwords"]:
        assert mark not in text


def test_reset_url_only_reaches_contacts_with_exposed_passwords(notices, link):
    no_passwords = person("identity", "card")
    assert not needs_reset(no_passwords)
    mail = notices.render_email(no_passwords, reset_url=link)
    assert link not in mail.text and TOKEN not in mail.html
    assert TOKEN not in notices.render_sms(no_passwords, reset_url=link).text
    with_passwords = person("card", "passwords")
    assert needs_reset(with_passwords)
    mail = notices.render_email(with_passwords, reset_url=link)
    assert link in mail.text
    assert f'href="{link}"' in mail.html
    assert link in notices.render_sms(with_passwords, reset_url=link).text
    reminder = notices.render_email(with_passwords, notice="reminder", reset_url=link)
    assert "not yet reset" in reminder.text and link in reminder.text


def test_without_a_link_passwords_contacts_are_still_told_to_change_it(notices):
    mail = notices.render_email(person("passwords"), reset_url=None)
    assert "please change your Acme Corp password now" in mail.text
    assert "None" not in mail.text


def test_html_escapes_contact_data_and_text_keeps_it(notices):
    name = "<script>alert('x')</script> & Co"
    mail = notices.render_email(person("card", name=name))
    assert "<script>" not in mail.html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; Co" in mail.html
    assert f"Dear {name}," in mail.text


def test_advice_is_escaped_in_html_and_its_links_are_clickable(tmp_path, config):
    folder = override(
        tmp_path,
        {
            "_shared/advice/card.txt.j2": (
                'Your card\nSee https://bank.example/help?a=1&b=2. Or <b>call</b> "us".\n'
            )
        },
    )
    mail = Notices(config, folder).render_email(person("card", name="Eve"))
    assert (
        'See <a href="https://bank.example/help?a=1&amp;b=2">'
        "https://bank.example/help?a=1&amp;b=2</a>. Or &lt;b&gt;call&lt;/b&gt; "
        "&#34;us&#34;."
    ) in mail.html
    assert 'See https://bank.example/help?a=1&b=2. Or <b>call</b> "us".' in mail.text


def test_missing_name_gets_a_polite_greeting(notices):
    mail = notices.render_email(person("identity", name=None))
    assert "Dear Customer," in mail.text and "Dear Customer," in mail.html


def test_contact_view_from_model():
    from notify.models import Contact

    row = Contact(
        key="C-9",
        name="  Ann  ",
        email="ann@example.com",
        phone=None,
        exposures="identity;passwords",
        extra=None,
        country="US",
    )
    view = ContactView.from_model(row)
    assert view == ContactView(
        key="C-9",
        name="Ann",
        email="ann@example.com",
        phone=None,
        exposures=["identity", "passwords"],
        extra={},
        country="US",
    )


def test_contact_without_exposure_is_an_error(notices):
    with pytest.raises(TemplateError, match="no exposure"):
        notices.render_email(person())


# --- safety ---------------------------------------------------------------------------------


def test_subject_cannot_carry_line_breaks(tmp_path, config):
    folder = override(tmp_path, {"card/email.subject.j2": "Notice for {{ contact.name }}"})
    notices = Notices(config, folder)
    evil = "Eve\r\nBcc: victim@example.com\n\nbody\u2028X"
    mail = notices.render_email(person("card", name=evil))
    assert not any(c in mail.subject for c in "\r\n\u2028")
    assert mail.subject == "Notice for Eve Bcc: victim@example.com body X"
    parsed = message_from_bytes(
        build_email(config, mail, "jane@example.com", "<a.1@acme.example>"),
        policy=email_policy.default,
    )
    assert parsed["Bcc"] is None
    assert parsed["Subject"] == mail.subject


def test_templates_are_sandboxed_and_cannot_change_the_campaign(tmp_path, config):
    folder = override(
        tmp_path,
        {
            "card/email.subject.j2": "{{ contact.__class__.__mro__ }}",
            "identity/email.subject.j2": "{{ campaign.pop('organization') }}",
        },
    )
    notices = Notices(config, folder)
    with pytest.raises(TemplateError, match=r"card/email\.subject\.j2, line 1"):
        notices.render_email(person("card"))
    with pytest.raises(TemplateError, match=r"identity/email\.subject\.j2, line 1"):
        notices.render_email(person("identity"))
    assert notices.render_email(person("passwords")).subject.endswith("Acme Corp password")


def test_undefined_name_is_reported_with_file_and_line(tmp_path, config):
    folder = override(
        tmp_path,
        {
            "passwords/email.txt.j2": "Hello\n\n{{ contact.nmae }}\n",
            "_shared/advice/card.txt.j2": "Your card\n{{ no_such_thing }}\n",
        },
    )
    notices = Notices(config, folder)
    with pytest.raises(TemplateError) as caught:
        notices.render_email(person("passwords"))
    assert "passwords/email.txt.j2, line 3: undefined" in str(caught.value)
    assert "nmae" in str(caught.value)
    # in an included piece, the piece is named
    with pytest.raises(TemplateError, match=r"_shared/advice/card\.txt\.j2, line 2: undefined"):
        notices.render_email(person("card"))
    problems = notices.check()
    assert any("passwords/email.txt.j2, line 3" in p for p in problems)
    assert any("_shared/advice/card.txt.j2, line 2" in p for p in problems)


def test_syntax_error_is_reported_with_file_and_line(tmp_path, config):
    folder = override(tmp_path, {"passwords/sms.txt.j2": "Hi\n{% if %}\n"})
    notices = Notices(config, folder)  # compiling does not raise: check() reports
    problems = notices.check()
    assert any("passwords/sms.txt.j2, line 2: syntax error" in p for p in problems), problems
    with pytest.raises(TemplateError, match=r"passwords/sms\.txt\.j2, line 2: syntax error"):
        notices.render_sms(person("passwords"))
    # the other notices are unaffected
    assert notices.render_sms(person("card")).template == "card"


# --- overrides ------------------------------------------------------------------------------


def test_override_folder_first_then_defaults(tmp_path, config, notices):
    folder = override(tmp_path, {"card/email.subject.j2": "Custom notice from {{ organization }}"})
    custom = Notices(config, folder)
    card = person("card")
    mail = custom.render_email(card)
    assert mail.subject == "Custom notice from Acme Corp"
    assert mail.text == notices.render_email(card).text  # files it lacks: the defaults
    assert mail.version != notices.render_email(card).version  # a changed source, a new version
    ident = person("identity")
    assert custom.render_email(ident).subject == notices.render_email(ident).subject
    # the version is the whole stored set's: every message rendered from it records it
    assert custom.render_email(ident).version == mail.version == custom.version


def test_override_can_extend_the_default_of_the_same_name(tmp_path, config):
    folder = override(
        tmp_path,
        {
            "card/email.txt.j2": (
                '{% extends "defaults/card/email.txt.j2" %}\n'
                "{% block first_step %}\n"
                "Call us first: we will cancel the card for you.\n{% endblock %}\n"
            )
        },
    )
    text = Notices(config, folder).render_email(person("card")).text
    assert "Call us first: we will cancel the card for you." in text
    assert "What You Can Do" in text


def test_version_follows_the_sources(tmp_path, config, notices):
    sms = "{{ organization }} %s {{ campaign.support_url }}"
    folder = override(tmp_path, {"passwords/sms.txt.j2": sms % "v1"})
    first = Notices(config, folder).render_sms(person("passwords")).version
    (folder / "passwords/sms.txt.j2").write_text(sms % "v2")
    second = Notices(config, folder).render_sms(person("passwords")).version
    assert len(first) == 64 and first != second
    # a shared piece counts too, and the same files read again are the same version
    advice = override(tmp_path / "b", {"_shared/advice/card.txt.j2": "Your card\nCall your bank."})
    assert Notices(config, advice).version != notices.version
    assert Notices(config, advice).version == Notices(config, advice).version


def test_missing_override_folder_is_an_error(tmp_path, config):
    with pytest.raises(TemplateSetError, match="templates folder not found"):
        Notices(config, tmp_path / "nope")


# --- check ----------------------------------------------------------------------------------


def test_every_default_template_passes_check(notices):
    assert notices.check() == []


def test_defaults_pass_check_for_a_campaign_with_only_the_required_fields(tmp_path):
    bare = CampaignConfig(
        name="bare",
        organization="Zed Ltd",
        sender_email="it@zed.example",
        reset_url="https://zed.example/r/{token}",
    )
    assert Notices(bare, None).check() == []


def test_check_flags_missing_headings_missing_link_and_stray_files(tmp_path, config):
    folder = override(
        tmp_path,
        {
            "identity/email.txt.j2": "Notice of Data Breach\n\nWhat Happened\n{{ organization }}\n",
            "passwords/reminder.sms.txt.j2": "{{ organization }}: please reset your password.",
            "card/email.text.j2": "typo in the name",
        },
    )
    problems = Notices(config, folder).check()
    text = "\n".join(problems)
    assert "identity/email.txt.j2: missing the heading 'What Information Was Involved'" in text
    assert "identity/email.txt.j2: missing the heading 'What Happened'" not in text
    assert "passwords/reminder.sms.txt.j2: does not show the reset link" in text
    assert "card/email.text.j2: not used" in text


def test_check_flags_an_sms_over_three_segments(tmp_path, config):
    long = "{{ campaign.support_url }} " + "word " * 100  # ~540 GSM-7 characters
    folder = override(tmp_path, {"card/sms.txt.j2": long})
    notices = Notices(config, folder)
    with pytest.raises(TemplateError, match="needs 4 segments"):
        notices.render_sms(person("card"))
    assert any(
        "card/sms.txt.j2: the SMS for exposures card needs 4 segments" in p for p in notices.check()
    )


def test_check_flags_an_sms_that_does_not_point_to_the_notice(tmp_path, config):
    folder = override(tmp_path, {"card/sms.txt.j2": "{{ organization }}: check your card."})
    assert any("does not point to the full notice" in p for p in Notices(config, folder).check())


# --- SMS segments ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, segments",
    [
        ("", 0),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("a" * 459, 3),
        ("a" * 460, 4),
        ("€" * 80, 1),  # extension characters take two septets
        ("€" * 81, 2),
        ("a" * 159 + "€", 2),  # 161 septets
        ("a" * 152 + "{" + "a" * 8, 2),  # the escape pair is never split across parts
        ("a" * 152 + "{" + "a" * 153, 3),
        ("ł" * 70, 1),
        ("ł" * 71, 2),
        ("ł" * 201, 3),
        ("ł" * 202, 4),  # UCS-2
        ("a" * 69 + "ł", 1),
        ("a" * 159 + "ł", 3),  # one non-GSM character turns a 1-part GSM-7 text into 3 UCS-2
        ("😀" * 35, 1),  # 70 UTF-16 units
        ("😀" * 36, 2),  # surrogate pairs are not split: 33 per part
    ],
)
def test_sms_segments(text, segments):
    assert sms_segments(text) == segments


def test_sms_encoding():
    assert sms_encoding("Hello @ £5 Ünïcode?") == "UCS-2"  # ï is not in GSM-7
    assert sms_encoding("Hello @ £5 [é] €") == "GSM-7"
    assert sms_encoding("Zoë") == "UCS-2"


def test_default_sms_fits_with_the_longest_exposure_list_and_a_reset_link(notices, link):
    sms = notices.render_sms(person("identity", "card", "passwords"), reset_url=link)
    assert sms.segments <= 3 and sms_encoding(sms.text) == "GSM-7"
    assert link in sms.text and "https://acme.example/security-notice" in sms.text


# --- building the email ---------------------------------------------------------------------


def parse(data: bytes):
    return message_from_bytes(data, policy=email_policy.default)


def test_build_email_is_multipart_alternative_with_both_parts(config, notices, link):
    mail = notices.render_email(person("identity", "passwords"), reset_url=link)
    message_id = message_id_for(config, 3, 42)
    when = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
    data = build_email(config, mail, "jane@example.com", message_id, when=when)
    assert data.count(b"\n") == data.count(b"\r\n")  # CRLF only, ready for SMTP DATA
    message = parse(data)
    assert message.get_content_type() == "multipart/alternative"
    assert not message.defects
    plain, html = message.iter_parts()
    assert plain.get_content_type() == "text/plain"
    assert html.get_content_type() == "text/html"
    assert plain.get_content().replace("\r\n", "\n") == mail.text
    assert html.get_content().replace("\r\n", "\n").rstrip("\n") == mail.html.rstrip("\n")
    assert message["Message-ID"] == message_id == "<notify.3.42.acme-2026-11@acme.example>"
    assert message["From"] == "Acme Security <security@acme.example>"
    assert message["To"] == "jane@example.com"
    assert message["Reply-To"] == "help@acme.example"
    assert message["Subject"] == mail.subject
    assert message["MIME-Version"] == "1.0"
    assert message["Date"].datetime == when
    assert build_email(config, mail, "jane@example.com", message_id, when=when) == data


def test_non_ascii_content_and_headers_are_encoded(config, notices):
    cfg = dataclasses.replace(config, sender_name="Sécurité Acme", organization="Acme Société")
    mail = Notices(cfg, None).render_email(person("card", name="Zoë Łukasiewicz"))
    data = build_email(cfg, mail, "zoe@example.com", "<x.1@acme.example>")
    assert data.isascii()  # RFC 2047 headers, base64 bodies
    assert b"=?utf-8?" in data
    message = parse(data)
    assert message["From"].addresses[0].display_name == "Sécurité Acme"
    assert message["Subject"] == mail.subject and "Société" in mail.subject
    assert "Dear Zoë Łukasiewicz," in message.get_body(("plain",)).get_content()


def test_idna_recipient(config, notices):
    mail = notices.render_email(person("card"))
    data = build_email(config, mail, "jane@xn--bcher-kva.example", "<x.1@acme.example>")
    assert b"\r\nTo: jane@xn--bcher-kva.example\r\n" in data
    unicode_domain = build_email(config, mail, "jane@Bücher.example", "<x.1@acme.example>")
    assert parse(unicode_domain)["To"] == "jane@xn--bcher-kva.example"


@pytest.mark.parametrize(
    "to, message_id",
    [
        ("jane@example.com\r\nBcc: x@example.com", "<x.1@acme.example>"),
        ("not-an-address", "<x.1@acme.example>"),
        ("jane@example.com", "<x.1@acme.example>\r\nBcc: x@example.com"),
        ("jane@example.com", "no-brackets@acme.example"),
    ],
)
def test_build_email_refuses_bad_recipients_and_ids(config, notices, to, message_id):
    mail = notices.render_email(person("card"))
    with pytest.raises(MessageError):
        build_email(config, mail, to, message_id)


def test_message_id_is_deterministic_per_row(config):
    assert message_id_for(config, 1, 7) == message_id_for(config, 1, 7)
    assert message_id_for(config, 1, 7) != message_id_for(config, 1, 8)
    assert message_id_for(config, 1, 7) != message_id_for(config, 2, 7)
    odd = dataclasses.replace(config, name="Big..Sale_2026", sender_email="it@Bücher.example")
    assert message_id_for(odd, 1, 7) == "<notify.1.7.big-sale-2026@xn--bcher-kva.example>"


def test_check_skips_a_channel_the_campaign_never_uses(config):
    # é and è are GSM-7, but "ç" (lower case) is not: every SMS becomes UCS-2 (201 characters)
    accented = dataclasses.replace(config, organization="Françoise Ltd")
    problems = Notices(accented, None).check()
    assert any("needs 4 segments" in p and "UCS-2" in p for p in problems)
    email_only = dataclasses.replace(accented, channels=("email",), fallback="none")
    assert Notices(email_only, None).check() == []
