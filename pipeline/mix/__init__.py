"""The mix: which documents, how many copies, in which shard; arithmetic over the caches' tables.

- `plan`: exact token targets per (source, length bucket) from the config's shares;
- `held_out`: validation and test splits, drawn first, at most one copy of a document;
- `select`: which documents and how many copies hit each bucket's target, to the token;
- `planning`: the plan of a run made in one place (`plan_mixture`), and rebuilt from its note.

Pure functions without Beam, deterministic, so every runner and worker gets the same answer.
"""
