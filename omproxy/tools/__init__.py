"""The commands besides serving, one module each: `verify` and `diff` (`verify`, `compare`,
`reports`, run by `regression`), `lint`, `inspect`."""
