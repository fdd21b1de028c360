"""The campaign file's breach-law keys: parsed, stored, and each bad value named."""

from __future__ import annotations

import pytest

from notify import campaigns
from notify.errors import ConfigError
from tests.factories import campaign_toml


def test_law_keys_are_parsed_and_survive_storage(tmp_path):
    path = campaign_toml(
        tmp_path,
        determined_date='"2026-11-23"',
        law_enforcement_delay_until="2026-12-01",
        regimes='["HIPAA"]',
        business_email_domains='["@Corp.Acme.Example", "acme.example"]',
    )
    config = campaigns.parse_campaign_file(path)
    assert config.determined_date == "2026-11-23"
    assert config.law_enforcement_delay_until == "2026-12-01"  # a TOML date works too
    assert config.regimes == ("hipaa",)
    assert config.business_email_domains == ("corp.acme.example", "acme.example")
    assert config.credit_monitoring == {
        "provider": "Experian IdentityWorks",
        "months": 24,
        "enroll_url": "https://acme.example/monitoring",
    }
    assert (config.prices.email, config.prices.sms_segment, config.prices.currency) == (
        0.0004,
        0.0079,
        "USD",
    )
    assert campaigns.CampaignConfig.from_dict(config.as_dict()) == config


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"determined_date": '"23/11/2026"'}, "determined_date: '23/11/2026' is not a date"),
        ({"regimes": '["glba"]'}, "regimes: 'glba' is not a known regime (known: hipaa)"),
        ({"regimes": '"hipaa"'}, "regimes: must be a list of strings"),
        (
            {"credit_monitoring": '{ provider = "X", months = 12 }'},
            "credit_monitoring.enroll_url: is required",
        ),
        (
            {
                "credit_monitoring": '{ provider = "X", months = 0, '
                'enroll_url = "https://x.example" }'
            },
            "credit_monitoring.months: 0 must be a positive whole number of months",
        ),
        (
            {"credit_monitoring": '{ provider = "X", months = 12, enroll_url = "x.example" }'},
            "credit_monitoring.enroll_url: 'x.example' must be an http(s) URL",
        ),
        (
            {
                "credit_monitoring": '{ provider = "X", months = 12, enroll_url = "https://x", '
                "code = 1 }"
            },
            "credit_monitoring.code: unknown key",
        ),
        (
            {"business_email_domains": '["not a domain"]'},
            "business_email_domains: 'not a domain' is not a domain",
        ),
        ({"prices": "{ email = -1 }"}, "prices.email: -1 must be a number, 0 or more"),
        ({"prices": "{ sms = 1 }"}, "prices.sms: unknown key"),
    ],
)
def test_bad_values_are_named(tmp_path, change, message):
    with pytest.raises(ConfigError, match=None) as caught:
        campaigns.parse_campaign_file(campaign_toml(tmp_path, **change))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
