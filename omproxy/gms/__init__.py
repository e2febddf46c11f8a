"""GMS Open Media, as omproxy knows it: the bracketed form codec (`formcodec`), the vocabulary of
operations, paths, replies and rules (`vocabulary`), and GMS's behaviour (`simulator`). Pure: no
files, no HTTP."""
