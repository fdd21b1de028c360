"""Templates are a versioned snapshot: read once at `campaign load` (realpath-checked), stored
in the database, rendered from there; every message records the version it was rendered from."""

from __future__ import annotations

import csv
import os
import shutil
from email import message_from_bytes
from email import policy as email_policy
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text

from notify import db
from notify.cli import main
from notify.models import Campaign, Message, TemplateVersion
from tests.factories import add_contacts

NAME = "acme-2026-11"
SUBJECT_V1 = "Version one: your card at {{ organization }}\n"
SUBJECT_V2 = "Version two: your card at {{ organization }}\n"


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def with_templates(campaign_file: Path, folder: str = "notices") -> None:
    campaign_file.write_text(
        campaign_file.read_text().replace("[throttle]", f'templates = "{folder}"\n\n[throttle]')
    )


def write(root: Path, files: dict[str, str]) -> Path:
    for name, body in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(body)
    return root


def engine_of(env):
    return db.connect(env["NOTIFY_DATABASE_URL"])


def stored(env) -> tuple[int, int]:
    """(campaigns, template versions) in the database."""
    with db.session_scope(engine_of(env)) as session:
        return (
            session.scalar(select(func.count()).select_from(Campaign)),
            session.scalar(select(func.count()).select_from(TemplateVersion)),
        )


def current_version(env) -> str:
    with db.session_scope(engine_of(env)) as session:
        campaign = session.scalar(select(Campaign).where(Campaign.name == NAME))
        return session.get(TemplateVersion, campaign.template_version_id).sha256


def subjects(outbox: Path) -> list[str]:
    return sorted(
        message_from_bytes(p.read_bytes(), policy=email_policy.default)["Subject"]
        for p in (outbox / "email").glob("*.eml")
    )


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, result.output
    return lines[0]


def email_only(campaign_file: Path) -> None:
    campaign_file.write_text(
        campaign_file.read_text()
        .replace('channels = ["email", "sms"]', 'channels = ["email"]')
        .replace('fallback = "sms"', 'fallback = "none"')
    )


# --- the snapshot ----------------------------------------------------------------------------


def test_send_renders_the_stored_version_without_the_folder(env, campaign_file, tmp_path):
    email_only(campaign_file)
    write(tmp_path / "notices", {"card/email.subject.j2": SUBJECT_V1})
    with_templates(campaign_file)
    loaded = run("campaign", "load", str(campaign_file))
    assert loaded.exit_code == 0, loaded.output
    version = current_version(env)
    assert f"stored as version {version[:16]} (new version)" in loaded.output
    engine = engine_of(env)
    with db.session_scope(engine) as session:
        campaign = session.scalar(select(Campaign).where(Campaign.name == NAME))
    add_contacts(engine, campaign, 3, exposures="card")
    # The worker's machine has neither the folder nor the campaign file.
    shutil.rmtree(tmp_path / "notices")
    campaign_file.unlink()
    preview = run("preview", "--campaign", NAME, "--contact", "C-00000")
    assert preview.exit_code == 0, preview.output
    assert "Subject: Version one: your card at Acme Corp" in preview.output
    assert f"version {version[:16]}" in preview.output
    sent = run("send", NAME, "--yes")
    assert sent.exit_code == 0, sent.output
    assert subjects(Path(env["NOTIFY_OUTBOX"])) == ["Version one: your card at Acme Corp"] * 3
    with db.session_scope(engine) as session:
        versions = set(session.scalars(select(Message.template_version)))
    assert versions == {version}
    out = tmp_path / "deliveries.csv"
    assert run("export", "deliveries", NAME, "-o", str(out)).exit_code == 0
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["template_version"] for r in rows] == [version] * 3


def test_changing_templates_means_loading_again_and_sent_messages_keep_theirs(
    env, campaign_file, tmp_path
):
    email_only(campaign_file)
    notices = write(tmp_path / "notices", {"card/email.subject.j2": SUBJECT_V1})
    with_templates(campaign_file)
    assert run("campaign", "load", str(campaign_file)).exit_code == 0
    first = current_version(env)
    engine = engine_of(env)
    with db.session_scope(engine) as session:
        campaign = session.scalar(select(Campaign).where(Campaign.name == NAME))
    add_contacts(engine, campaign, 2, exposures="card")
    assert run("send", NAME, "--yes").exit_code == 0
    # Editing the folder changes nothing that is sent until the campaign is loaded again.
    write(notices, {"card/email.subject.j2": SUBJECT_V2})
    check = run("templates", "check", "--campaign", NAME)
    assert check.exit_code == 0, check.output
    assert f"differ from the stored version {first[:16]}" in check.output
    add_contacts(engine, campaign, 1, start=10, exposures="card")
    assert run("send", NAME, "--yes").exit_code == 0
    reloaded = run("campaign", "load", str(campaign_file))
    assert "(new version)" in reloaded.output
    second = current_version(env)
    assert second != first
    add_contacts(engine, campaign, 1, start=20, exposures="card")
    assert run("send", NAME, "--yes").exit_code == 0
    with db.session_scope(engine) as session:
        by_key = {
            key: version
            for key, version in session.execute(
                text(
                    "SELECT c.key, m.template_version FROM messages m "
                    "JOIN contacts c ON c.id = m.contact_id"
                )
            )
        }
    assert by_key == {"C-00000": first, "C-00001": first, "C-00010": first, "C-00020": second}
    assert subjects(Path(env["NOTIFY_OUTBOX"])) == ["Version one: your card at Acme Corp"] * 3 + [
        "Version two: your card at Acme Corp"
    ]
    again = run("campaign", "load", str(campaign_file))
    assert "(unchanged)" in again.output and current_version(env) == second
    assert stored(env) == (1, 2)


def test_the_same_files_are_one_stored_version(env, campaign_file, tmp_path):
    assert run("campaign", "load", str(campaign_file)).exit_code == 0
    other = tmp_path / "other.toml"
    other.write_text(campaign_file.read_text().replace(f'name = "{NAME}"', 'name = "other"'))
    assert run("campaign", "load", str(other)).exit_code == 0
    assert stored(env) == (2, 1)


def test_a_version_altered_in_the_database_is_never_sent(env, campaign_file):
    assert run("campaign", "load", str(campaign_file)).exit_code == 0
    with db.session_scope(engine_of(env)) as session:
        session.execute(
            text(
                "UPDATE template_versions SET files = REPLACE(files, "
                "'Notice of Data Breach', 'Nothing to see')"
            )
        )
    error = one_line_error(run("send", NAME, "--yes", "--dry-run"))
    assert "does not match its files" in error


def test_a_campaign_without_a_stored_version_says_load_it_again(env, campaign_file):
    assert run("campaign", "load", str(campaign_file)).exit_code == 0
    with db.session_scope(engine_of(env)) as session:
        session.execute(text("UPDATE campaigns SET template_version_id = NULL"))
    error = one_line_error(run("send", NAME, "--yes"))
    assert "has no stored templates" in error and "notify campaign load" in error


# --- hostile and careless folders --------------------------------------------------------------


@pytest.mark.parametrize("command", ["load", "check"])
def test_a_link_to_proc_environ_is_refused(env, campaign_file, tmp_path, monkeypatch, command):
    monkeypatch.setenv("NOTIFY_SMTP_PASSWORD", "hunter2-very-secret")
    notices = write(tmp_path / "notices", {"card/email.subject.j2": SUBJECT_V1})
    with_templates(campaign_file)
    if command == "check":  # linked in after a good load: the check reads the folder too
        assert run("campaign", "load", str(campaign_file)).exit_code == 0
    (notices / "_shared").mkdir()
    os.symlink("/proc/self/environ", notices / "_shared" / "footer.txt.j2")
    result = (
        run("campaign", "load", str(campaign_file))
        if command == "load"
        else run("templates", "check", "--campaign", NAME)
    )
    error = one_line_error(result)
    assert error.startswith("Error: notices/_shared/footer.txt.j2: a symbolic link to /proc/")
    assert "outside notices" in error
    assert "hunter2" not in result.output
    assert stored(env) == ((0, 0) if command == "load" else (1, 1))


@pytest.mark.parametrize("templates", ["../../usr", "/usr/share", "..", "link-out"])
def test_a_templates_folder_outside_the_campaign_folder_is_refused(
    env, campaign_file, tmp_path, templates
):
    os.symlink("/usr", tmp_path / "link-out")
    with_templates(campaign_file, templates)
    error = one_line_error(run("campaign", "load", str(campaign_file)))
    assert f"templates: {templates!r} is outside the campaign file's folder" in error
    assert stored(env) == (0, 0)


def test_files_that_are_not_regular_files_are_refused(env, campaign_file, tmp_path):
    notices = write(tmp_path / "notices", {"card/email.subject.j2": SUBJECT_V1})
    with_templates(campaign_file)
    cases = []
    fifo = notices / "card" / "sms.txt.j2"
    os.mkfifo(fifo)
    cases.append((fifo, "notices/card/sms.txt.j2: a FIFO, not a template file"))
    broken = notices / "card" / "email.txt.j2"
    os.symlink(tmp_path / "nowhere.j2", broken)
    cases.append((broken, "notices/card/email.txt.j2: a broken symbolic link"))
    outside_dir = notices / "identity"
    os.symlink(tmp_path.parent, outside_dir)
    cases.append((outside_dir, "notices/identity: a symbolic link to "))
    loop = notices / "passwords"
    os.symlink(".", loop)
    cases.append((loop, "notices/passwords: a symbolic link loop"))
    not_utf8 = notices / "_shared" / "advice" / "card.txt.j2"
    not_utf8.parent.mkdir(parents=True)
    not_utf8.write_bytes(b"Your card\n\xff\xfe\n")
    cases.append((not_utf8, "notices/_shared/advice/card.txt.j2: not UTF-8 text (byte 10)"))
    nul = notices / "_shared" / "advice" / "identity.txt.j2"
    nul.write_bytes(b"Your identity\n\0\n")
    cases.append((nul, "notices/_shared/advice/identity.txt.j2: a NUL byte at byte 14"))
    # Every case alone is refused; fixing them one by one, the last load succeeds.
    for path, expected in sorted(cases, key=lambda c: str(c[0])):
        error = one_line_error(run("campaign", "load", str(campaign_file)))
        assert expected in error, (expected, error)
        path.unlink()
    assert stored(env) == (0, 0)
    assert run("campaign", "load", str(campaign_file)).exit_code == 0


def test_links_within_the_folder_are_fine(env, campaign_file, tmp_path):
    notices = write(tmp_path / "notices", {"common/subject.j2": SUBJECT_V1})
    (notices / "card").mkdir()
    os.symlink("../common/subject.j2", notices / "card" / "email.subject.j2")
    (notices / "README.txt").write_text("not a template: not stored\n")
    with_templates(campaign_file)
    assert run("campaign", "load", str(campaign_file)).exit_code == 0
    with db.session_scope(engine_of(env)) as session:
        files = session.scalar(select(TemplateVersion.files))
    assert '"card/email.subject.j2": "Version one' in files and "README" not in files


@pytest.mark.parametrize(
    "kind,tag,name",
    [
        ("card", "include", "../../secret.j2"),
        ("identity", "include", "SECRET"),  # the absolute path of secret.j2
        ("passwords", "extends", "notes.txt"),
        ("card", "import", "/etc/passwd"),
        ("identity", "from", "../x.j2"),
        ("passwords", "include", "_shared/missing.txt.j2"),
    ],
)
def test_a_reference_leaving_the_stored_set_is_refused_at_load(
    env, campaign_file, tmp_path, kind, tag, name
):
    secret = tmp_path / "secret.j2"
    secret.write_text("TOP SECRET\n")
    name = str(secret) if name == "SECRET" else name
    statement = {
        "include": f"{{% include {name!r} %}}",
        "extends": f"{{% extends {name!r} %}}",
        "import": f"{{% import {name!r} as x %}}",
        "from": f"{{% from {name!r} import y %}}",
    }[tag]
    write(
        tmp_path / "notices",
        {
            f"{kind}/email.subject.j2": "Your notice\n" + statement + "\n",
            "notes.txt": "a file in the folder, but not a template\n",
        },
    )
    with_templates(campaign_file)
    for command in (("campaign", "load", str(campaign_file)),):
        result = run(*command)
        error = one_line_error(result)
        assert error == (
            f"Error: notices/{kind}/email.subject.j2, line 2: includes {name!r}, "
            "which is not in notices or the defaults"
        ), error
        assert "TOP SECRET" not in result.output and "not a template" not in result.output
    assert stored(env) == (0, 0)


@pytest.mark.parametrize(
    "statement",
    [
        "{% include name %}",
        '{% include "_shared/" ~ name %}',
        "{% extends [name] %}",
        '{% import name ~ ".j2" as x %}',
    ],
)
def test_an_include_named_by_an_expression_is_refused_at_load(
    env, campaign_file, tmp_path, statement
):
    write(tmp_path / "notices", {"card/sms.txt.j2": "Hi\n" + statement + "\n"})
    with_templates(campaign_file)
    error = one_line_error(run("campaign", "load", str(campaign_file)))
    assert error.startswith(
        "Error: notices/card/sms.txt.j2, line 2: includes a template named by an expression"
    ), error
    assert stored(env) == (0, 0)


def test_references_within_the_stored_set_load(env, campaign_file, tmp_path):
    write(
        tmp_path / "notices",
        {
            "card/email.txt.j2": '{% extends "defaults/card/email.txt.j2" %}\n',
            "card/email.html.j2": '{% extends "_shared/notice.html.j2" %}\n',
            "card/sms.txt.j2": '{% include ["_shared/sms.txt.j2", "card/extra.j2"] %}\n',
            "card/extra.j2": "more\n",
        },
    )
    with_templates(campaign_file)
    result = run("campaign", "load", str(campaign_file))
    assert result.exit_code == 0, result.output
    assert stored(env) == (1, 1)


def test_a_folder_changed_after_load_to_include_outside_fails_the_check(
    env, campaign_file, tmp_path
):
    notices = write(tmp_path / "notices", {"card/email.subject.j2": SUBJECT_V1})
    with_templates(campaign_file)
    assert run("campaign", "load", str(campaign_file)).exit_code == 0
    (notices / "card" / "email.subject.j2").write_text('{% include "/etc/passwd" %}\n')
    error = one_line_error(run("templates", "check", "--campaign", NAME))
    assert error == (
        "Error: notices/card/email.subject.j2, line 1: includes '/etc/passwd', "
        "which is not in notices or the defaults"
    ), error
    assert "root:" not in error


def test_check_warns_when_one_part_of_a_notice_is_overridden(env, campaign_file, tmp_path):
    notices = write(
        tmp_path / "notices",
        {
            "card/email.txt.j2": (
                '{% extends "defaults/card/email.txt.j2" %}\n'
                "{% block first_step %}\nCall us first.\n{% endblock %}\n"
            )
        },
    )
    with_templates(campaign_file)
    loaded = run("campaign", "load", str(campaign_file))
    warning = (
        "Warning: notices/card/email.txt.j2 overrides one part of the notice but not "
        "card/email.html.j2"
    )
    assert loaded.exit_code == 0 and warning in loaded.output
    check = run("templates", "check", "--campaign", NAME)
    assert check.exit_code == 0, check.output
    assert warning in check.output
    write(notices, {"card/email.html.j2": '{% extends "defaults/card/email.html.j2" %}\n'})
    assert run("campaign", "load", str(campaign_file)).exit_code == 0
    check = run("templates", "check", "--campaign", NAME)
    assert check.exit_code == 0 and "Warning" not in check.output


def test_check_says_when_the_folder_is_gone(env, campaign_file, tmp_path):
    write(tmp_path / "notices", {"card/email.subject.j2": SUBJECT_V1})
    with_templates(campaign_file)
    assert run("campaign", "load", str(campaign_file)).exit_code == 0
    shutil.rmtree(tmp_path / "notices")
    check = run("templates", "check", "--campaign", NAME)
    assert check.exit_code == 0, check.output
    assert "is gone; checked the stored version" in check.output
