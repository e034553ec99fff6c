"""The SCEPLINE_CONFIG file issue #15 gives as its contract, as written there."""

ISSUE_EXAMPLE = """
[endpoints.wifi]
challenge = "static"
static_challenge = "wifi-secret"

[endpoints.wifi.profile]
validity_days = 30
extended_key_usage = ["clientAuth"]

[endpoints.servers]
challenge = "one-time"

[endpoints.servers.profile]
validity_days = 90
extended_key_usage = ["serverAuth", "clientAuth"]

[endpoints.gear]
challenge = "manual"
"""
