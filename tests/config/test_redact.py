"""The effective configuration with secrets redacted."""

from __future__ import annotations

import json

from mixer.config import redacted
from tests.config.conftest import Loader, doc, docs


def test_redacts_secret_fields_and_secret_looking_keys(load: Loader) -> None:
    config = load(
        docs(
            doc(
                "handler",
                "rec",
                "compiledAdapter: recorder\nparams:\n  password: hunter2\n  auth_token: abc\n  endpoint: e:1",
            ),
            doc(
                "instance",
                "m",
                "compiledTemplate: metric\nparams:\n  value: '1'\n  dimensions: {app: source.name}",
            ),
            doc(
                "rule",
                "r",
                "match: 'true'\nactions:\n- {handler: rec, instances: [m]}\n"
                "requestHeaderOperations:\n- {name: x-a, values: ['\"b\"']}",
            ),
        )
    )
    effective = redacted(config)
    text = json.dumps(effective)  # JSON-ready
    assert "hunter2" not in text
    assert "abc" not in text
    params = effective["handlers"]["rec.istio-system"]["params"]
    assert params["password"] == "***"
    assert params["auth_token"] == "***"
    assert params["endpoint"] == "e:1"
    assert params["batch_size"] == 10  # defaults are shown: this is the effective config
    assert effective["instances"]["m.istio-system"]["params"] == {
        "value": "1",
        "dimensions": {"app": "source.name"},
    }
    (rule,) = effective["rules"]
    assert rule["match"] == "true"
    assert rule["actions"] == [{"handler": "rec.istio-system", "instances": ["m.istio-system"], "name": ""}]
    assert rule["requestHeaderOperations"] == [{"name": "x-a", "values": ['"b"'], "operation": "REPLACE"}]
    assert effective["attributes"]["source.ip"] == "IP_ADDRESS"


def test_unset_secrets_stay_visible_as_unset(load: Loader) -> None:
    config = load(doc("handler", "rec", "compiledAdapter: recorder"))
    params = redacted(config)["handlers"]["rec.istio-system"]["params"]
    assert params["password"] is None
    assert params["auth_token"] == ""
