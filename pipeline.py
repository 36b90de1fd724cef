"""shadow-eval: wiring and CLI (being built)."""


def main(argv=None) -> int:
    raise SystemExit("shadow-eval: CLI under construction")
