"""Schema migrations, applied in order at start-up. Append; never edit a released step.

Each concern appends its own steps (workspaces and audit here; packages, experiments and runs in
their own steps below). ``PRAGMA user_version`` records how many steps ran.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS"]

MIGRATIONS: list[str] = [
    # 1: workspaces, access grants, audit log.
    """
    CREATE TABLE workspaces (
        id             TEXT PRIMARY KEY,
        name           TEXT NOT NULL UNIQUE,
        owner          TEXT NOT NULL,
        path           TEXT NOT NULL,
        managed_path   INTEGER NOT NULL DEFAULT 1,
        status         TEXT NOT NULL,
        status_message TEXT NOT NULL DEFAULT '',
        url            TEXT,
        port           INTEGER,
        token          TEXT NOT NULL,
        password_hash  TEXT,
        resources      TEXT NOT NULL DEFAULT '{}',
        limits         TEXT NOT NULL DEFAULT '{}',
        image          TEXT,
        config         TEXT NOT NULL DEFAULT '{}',
        runtime        TEXT NOT NULL,
        runtime_state  TEXT,
        index_key      TEXT NOT NULL UNIQUE,
        created_at     REAL NOT NULL,
        updated_at     REAL NOT NULL,
        started_at     REAL
    );
    CREATE TABLE access (
        workspace_id   TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
        principal_type TEXT NOT NULL CHECK (principal_type IN ('user', 'team')),
        principal      TEXT NOT NULL,
        role           TEXT NOT NULL,
        granted_by     TEXT NOT NULL,
        granted_at     REAL NOT NULL,
        PRIMARY KEY (workspace_id, principal_type, principal)
    );
    CREATE TABLE audit (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        ts        REAL NOT NULL,
        user      TEXT NOT NULL,
        action    TEXT NOT NULL,
        workspace TEXT,
        outcome   TEXT NOT NULL,
        details   TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_workspace_ts ON audit (workspace, ts);
    """,
]

# Experiments: experiments, workspace links, runs (queued notebook/script executions), the metrics
# they log, and the sync history with the per-file hashes the conflict rule compares against.
# Runs keep the workspace's name and id without a foreign key: a run outlives its workspace.
MIGRATIONS.append(
    """
    CREATE TABLE experiments (
        id          TEXT PRIMARY KEY,
        created_at  REAL NOT NULL,
        created_by  TEXT NOT NULL
    );
    CREATE TABLE experiment_links (
        workspace_id  TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
        experiment_id TEXT NOT NULL REFERENCES experiments(id),
        linked_at     REAL NOT NULL,
        linked_by     TEXT NOT NULL,
        PRIMARY KEY (workspace_id, experiment_id)
    );
    CREATE INDEX experiment_links_experiment ON experiment_links (experiment_id);
    CREATE TABLE runs (
        id                TEXT PRIMARY KEY,
        experiment_id     TEXT NOT NULL REFERENCES experiments(id),
        workspace_id      TEXT NOT NULL,
        workspace         TEXT NOT NULL,
        user              TEXT NOT NULL,
        kind              TEXT NOT NULL CHECK (kind IN ('notebook', 'script')),
        target            TEXT NOT NULL,
        parameters        TEXT NOT NULL DEFAULT '{}',
        config            TEXT NOT NULL DEFAULT '{}',
        status            TEXT NOT NULL,
        message           TEXT NOT NULL DEFAULT '',
        error             TEXT,
        gpus              INTEGER NOT NULL DEFAULT 0,
        gpu_indexes       TEXT NOT NULL DEFAULT '[]',
        timeout_s         REAL,
        retries           INTEGER NOT NULL DEFAULT 0,
        attempt           INTEGER NOT NULL DEFAULT 0,
        current_cell      INTEGER,
        cells_total       INTEGER,
        queued_at         REAL NOT NULL,
        started_at        REAL,
        finished_at       REAL,
        exit_code         INTEGER,
        duration_s        REAL,
        peak_memory_bytes INTEGER,
        pid               INTEGER,
        pid_start         INTEGER,
        run_dir           TEXT NOT NULL,
        outputs           TEXT NOT NULL DEFAULT '[]',
        warnings          TEXT NOT NULL DEFAULT '[]',
        attempts          TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX runs_status ON runs (status, queued_at);
    CREATE INDEX runs_workspace ON runs (workspace_id, queued_at);
    CREATE INDEX runs_experiment ON runs (experiment_id, queued_at);
    CREATE INDEX runs_finished ON runs (finished_at);
    CREATE INDEX runs_counts ON runs (workspace_id, user, status);  -- `ml status` counts from the index alone
    CREATE TABLE run_metrics (
        run_id  TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        seq     INTEGER NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 1,
        name    TEXT NOT NULL,
        step    INTEGER,
        value   REAL,
        ts      REAL NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    CREATE TABLE sync_history (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        ts            REAL NOT NULL,
        workspace_id  TEXT NOT NULL,
        workspace     TEXT NOT NULL,
        experiment_id TEXT NOT NULL,
        direction     TEXT NOT NULL,
        user          TEXT NOT NULL,
        run_id        TEXT,
        copied        TEXT NOT NULL DEFAULT '[]',
        conflicts     TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX sync_history_workspace ON sync_history (workspace_id, ts);
    CREATE TABLE sync_files (
        workspace_id  TEXT NOT NULL,
        experiment_id TEXT NOT NULL,
        path          TEXT NOT NULL,
        sha256        TEXT NOT NULL,
        synced_at     REAL NOT NULL,
        PRIMARY KEY (workspace_id, experiment_id, path)
    );
    CREATE TABLE sync_conflicts (
        workspace_id  TEXT NOT NULL,
        experiment_id TEXT NOT NULL,
        path          TEXT NOT NULL,
        theirs_sha256 TEXT NOT NULL,
        copy_path     TEXT NOT NULL,
        created_at    REAL NOT NULL,
        PRIMARY KEY (workspace_id, experiment_id, path)
    );
    """
)

# Packages: requests (one open request per workspace + package + version range + installer, every
# requester's reason kept) and what `ml jupyter install` put into each workspace.
MIGRATIONS.append(
    """
    CREATE TABLE package_requests (
        id              TEXT PRIMARY KEY,
        workspace_id    TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
        workspace       TEXT NOT NULL,
        package         TEXT NOT NULL,
        specifier       TEXT NOT NULL DEFAULT '',
        conda           INTEGER NOT NULL DEFAULT 0,
        status          TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied')),
        created_at      REAL NOT NULL,
        decided_by      TEXT,
        decided_at      REAL,
        decision_reason TEXT
    );
    CREATE UNIQUE INDEX package_requests_open
        ON package_requests (workspace_id, package, specifier, conda) WHERE status = 'pending';
    CREATE INDEX package_requests_status ON package_requests (status, created_at);
    CREATE TABLE package_request_reasons (
        request_id   TEXT NOT NULL REFERENCES package_requests(id) ON DELETE CASCADE,
        requester    TEXT NOT NULL,
        spec         TEXT NOT NULL,
        reason       TEXT NOT NULL DEFAULT '',
        requested_at REAL NOT NULL
    );
    CREATE INDEX package_request_reasons_request ON package_request_reasons (request_id);
    CREATE TABLE package_installs (
        workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
        name         TEXT NOT NULL,
        display_name TEXT NOT NULL,
        version      TEXT NOT NULL DEFAULT '',
        spec         TEXT NOT NULL DEFAULT '',
        requested    INTEGER NOT NULL DEFAULT 1,
        installer    TEXT NOT NULL DEFAULT 'pip',
        forced       INTEGER NOT NULL DEFAULT 0,
        installed_by TEXT NOT NULL,
        installed_at REAL NOT NULL,
        PRIMARY KEY (workspace_id, name)
    );
    """
)

# Access to JupyterLab (fetchml_agent/access, docs/access.md): personal-token generations (no token
# is stored: they are recomputed), browser sessions, TOTP enrolments (secret sealed with the access
# key file) and workspace-server credentials bound to a workspace after their server started.
MIGRATIONS.append(
    """
    CREATE TABLE access_token_generations (
        user         TEXT NOT NULL,
        workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
        generation   INTEGER NOT NULL,
        PRIMARY KEY (user, workspace_id)
    );
    CREATE TABLE access_sessions (
        id           TEXT PRIMARY KEY,
        user         TEXT NOT NULL,
        workspace_id TEXT NOT NULL,
        workspace    TEXT NOT NULL,
        method       TEXT NOT NULL,
        mfa          INTEGER NOT NULL DEFAULT 0,
        address      TEXT NOT NULL DEFAULT '',
        created_at   REAL NOT NULL,
        last_seen    REAL NOT NULL,
        ended_at     REAL,
        end_reason   TEXT
    );
    CREATE INDEX access_sessions_user ON access_sessions (user, created_at);
    CREATE INDEX access_sessions_open ON access_sessions (ended_at) WHERE ended_at IS NULL;
    CREATE TABLE access_mfa (
        user          TEXT PRIMARY KEY,
        secret_sealed TEXT NOT NULL,
        created_at    REAL NOT NULL,
        confirmed_at  REAL,
        last_step     INTEGER NOT NULL DEFAULT 0,
        recovery      TEXT NOT NULL DEFAULT '[]'
    );
    CREATE TABLE access_server_bindings (
        digest       TEXT PRIMARY KEY,
        workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
        bound_at     REAL NOT NULL
    );
    """
)

# Governance: the audit log becomes a chain (fetchml_agent/store/chain.py, docs/audit.md).
# The canonical event document is the row; the columns people query are generated from it (or,
# for ``user``, from the personal document), so they cannot be edited apart from what the chain
# covers. The old table's events are chained at the next start (store/audit.py adopt_legacy).
# ``erased_accounts`` remembers erased users by a MAC of their API key, never by name.
MIGRATIONS.append(
    """
    ALTER TABLE audit RENAME TO audit_legacy;
    DROP INDEX IF EXISTS audit_workspace_ts;
    CREATE TABLE audit (
        id           INTEGER PRIMARY KEY,
        event        TEXT NOT NULL,
        digest       BLOB NOT NULL,
        personal     TEXT NOT NULL,
        salt         BLOB,
        seal         BLOB,
        seq          INTEGER GENERATED ALWAYS AS (json_extract(event, '$.id')) STORED,
        commitment   TEXT GENERATED ALWAYS AS (json_extract(event, '$.personal')) STORED,
        ts           REAL GENERATED ALWAYS AS (json_extract(event, '$.ts')) STORED,
        workspace_id TEXT GENERATED ALWAYS AS (json_extract(event, '$.workspace_id')) STORED,
        workspace    TEXT GENERATED ALWAYS AS (json_extract(event, '$.workspace')) STORED,
        user         TEXT GENERATED ALWAYS AS (json_extract(personal, '$.user')) STORED,
        action       TEXT GENERATED ALWAYS AS (json_extract(event, '$.action')) VIRTUAL,
        outcome      TEXT GENERATED ALWAYS AS (json_extract(event, '$.outcome')) VIRTUAL,
        details      TEXT GENERATED ALWAYS AS (json_extract(event, '$.details')) VIRTUAL
    );
    CREATE INDEX audit_by_workspace_id ON audit (workspace_id, id);
    CREATE INDEX audit_by_workspace ON audit (workspace, id);
    CREATE TABLE audit_head (
        k       INTEGER PRIMARY KEY CHECK (k = 1),
        last_id INTEGER NOT NULL,
        digest  BLOB NOT NULL,
        mac     BLOB NOT NULL,
        key_id  TEXT NOT NULL
    );
    CREATE TABLE audit_checkpoints (
        through_id INTEGER PRIMARY KEY,
        digest     BLOB NOT NULL,
        created_at REAL NOT NULL,
        removed    INTEGER NOT NULL,
        summary    TEXT NOT NULL,
        mac        BLOB NOT NULL
    );
    CREATE TABLE erased_accounts (
        key_mac    BLOB PRIMARY KEY,
        pseudonym  TEXT NOT NULL,
        erased_at  REAL NOT NULL
    );
    """
)

# Package removals (`ml jupyter uninstall`): what was removed from a workspace, when and by whom.
MIGRATIONS.append(
    """
    CREATE TABLE package_removals (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
        name         TEXT NOT NULL,
        display_name TEXT NOT NULL,
        version      TEXT NOT NULL DEFAULT '',
        removed_by   TEXT NOT NULL,
        removed_at   REAL NOT NULL
    );
    CREATE INDEX package_removals_workspace ON package_removals (workspace_id, removed_at);
    """
)

# Where the agent stands in a runtime's change feed (Nomad's event stream index), so that a
# restarted agent resumes from the last position it processed (fetchml_agent/store/cursors.py).
MIGRATIONS.append(
    """
    CREATE TABLE runtime_cursors (
        name       TEXT PRIMARY KEY,
        position   INTEGER NOT NULL,
        updated_at REAL NOT NULL
    );
    """
)

# The SHA-256 of the file pip installed into a workspace: a run's lock pins it (issue #18,
# fetchml_agent/experiments/environment.py).
MIGRATIONS.append(
    """
    ALTER TABLE package_installs ADD COLUMN sha256 TEXT NOT NULL DEFAULT '';
    """
)

# Usage history (fetchml_agent/usage, docs/observe.md): each running workspace's samples, as taken
# (tier 0) and rolled up into 5-minute and hourly averages (tier = the bucket's width in seconds),
# the rollups' watermarks, and the events that matter (OOM kills, restarts, culls, limit changes).
# Keyed by workspace id without a foreign key: a deleted workspace's history goes with its delete hook.
MIGRATIONS.append(
    """
    CREATE TABLE usage_samples (
        workspace_id       TEXT NOT NULL,
        tier               INTEGER NOT NULL,
        ts                 REAL NOT NULL,
        n                  INTEGER NOT NULL DEFAULT 1,
        cpu_cores          REAL,
        cpu_limit_cores    REAL,
        memory_bytes       REAL,
        memory_peak_bytes  REAL,
        memory_limit_bytes REAL,
        gpu_utilization    REAL,
        gpu_memory_bytes   REAL,
        disk_bytes         REAL,
        processes          REAL,
        kernels            REAL,
        busy_kernels       REAL,
        PRIMARY KEY (workspace_id, tier, ts)
    ) WITHOUT ROWID;
    CREATE INDEX usage_samples_tier_ts ON usage_samples (tier, ts);
    CREATE TABLE usage_rollups (
        tier       INTEGER PRIMARY KEY,
        done_until REAL NOT NULL
    );
    CREATE TABLE usage_events (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        workspace_id TEXT NOT NULL,
        workspace    TEXT NOT NULL,
        ts           REAL NOT NULL,
        kind         TEXT NOT NULL,
        details      TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX usage_events_workspace ON usage_events (workspace_id, ts);
    CREATE INDEX usage_events_ts ON usage_events (ts);
    """
)
