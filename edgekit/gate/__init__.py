"""The CI gate: `edgekit check` and its baseline, JUnit and Markdown outputs."""
