"""The rules of the two migration branches (fabric/db/migration.py), checked on the scripts."""

from __future__ import annotations

import re
from pathlib import Path

from alembic.script import ScriptDirectory

from fabric.db import migration

#: The last revision before the history split into expand and contract.
SPLIT = "0005"
#: Operations that take away or tighten what a running worker of the previous release may use.
CONTRACTING = re.compile(r"op\.(drop_\w+|rename_table)\(|alter_column\([^)]*(nullable=False|new_column_name)")


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(migration._config())


def test_every_migration_after_the_split_is_on_exactly_one_branch():
    script = _script()
    expand = {r.revision for r in script.iterate_revisions("expand@head", SPLIT)} - {SPLIT}
    contract_only = {r.revision for r in script.iterate_revisions("contract@head", SPLIT)} - {SPLIT} - expand
    up_to_split = {r.revision for r in script.iterate_revisions(SPLIT, "base")}
    after_split = {r.revision for r in script.walk_revisions()} - up_to_split
    assert after_split == expand | contract_only
    assert "0006_expand" in expand and "0006_contract" in contract_only
    for revision in contract_only:  # a contract migration never feeds the expand branch
        assert not any(revision in (script.get_revision(e).dependencies or ()) for e in expand)


def test_expand_migrations_only_add():
    script = _script()
    expand = {r.revision for r in script.iterate_revisions("expand@head", SPLIT)} - {SPLIT}
    for revision in expand:
        source = Path(script.get_revision(revision).path).read_text()
        upgrade = source.split("def upgrade", 1)[1].split("def downgrade", 1)[0]
        found = CONTRACTING.search(upgrade)
        assert found is None, f"expand migration {revision} contracts the schema ({found.group(0)}): " \
                              "move that to a contract migration"


def test_the_guard_above_sees_a_contracting_operation():
    assert CONTRACTING.search("op.drop_column('instances', 'old')")
    assert CONTRACTING.search("op.alter_column('ports', 'mac', nullable=False)")
    assert not CONTRACTING.search("op.add_column('ports', sa.Column('x', sa.String(4), nullable=True))")
