"""The demo's provider and mode names, importable without loading the demo itself."""

PROVIDERS = ("alipay", "wechat_v2", "wechat_v3", "alipay_plus", "citcon")
MODES = ("qr", "code", "both")
