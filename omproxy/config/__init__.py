"""Configuration: every option declared once (`options.OPTIONS`: key, checker, help, flag, modes),
the `Config` value and the enums (`options`), and reading config.yaml with flags on top (`file`)."""
