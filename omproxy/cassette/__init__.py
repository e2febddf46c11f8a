"""Cassettes: what an entry is (`entry`), how it is written and read as YAML (`yamlformat`, and
`quickyaml` for exactly what the writer writes), where cassettes live and how they are loaded,
streamed and appended to (`storage`), what a big one parsed to (`indexcache`), and VCR.py and
HAR 1.2 out and in (`interchange`)."""
