-- hpc-registry metadata, version 1.
-- Portable SQL on purpose: BIGINT/TEXT/BLOB, no SQLite-only syntax beyond what PostgreSQL also
-- accepts (INSERT ... ON CONFLICT), so a PostgreSQL backend can run the same statements.

CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL);

CREATE TABLE IF NOT EXISTS repositories (
    id          INTEGER PRIMARY KEY,             -- PostgreSQL: BIGINT GENERATED ALWAYS AS IDENTITY
    name        TEXT NOT NULL UNIQUE,
    namespace   TEXT NOT NULL,                   -- first path component: user, group or public area
    created_at  BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS repositories_by_namespace ON repositories (namespace, name);

-- Every committed blob, once, whatever the number of repositories holding it.
CREATE TABLE IF NOT EXISTS blobs (
    digest              TEXT PRIMARY KEY,
    size                BIGINT NOT NULL,
    created_at          BIGINT NOT NULL,
    -- Manifests (in any repository) that reference this blob; maintained in the same transaction
    -- as every manifest insert/delete so garbage collection never walks the store.
    ref_count           BIGINT NOT NULL DEFAULT 0,
    -- Since when ref_count has been 0 (set at upload time too): the GC grace period starts here.
    unreferenced_since  BIGINT,
    -- 'live', or 'deleting' while GC removes the bytes (a push that needs the blob then fails
    -- cleanly with BLOB_UNKNOWN or resurrects it).
    gc_state            TEXT NOT NULL DEFAULT 'live'
);
CREATE INDEX IF NOT EXISTS blobs_unreferenced ON blobs (ref_count, unreferenced_since);

-- Blob <-> repository links: a digest is readable only through a repository that holds it.
CREATE TABLE IF NOT EXISTS repository_blobs (
    repository_id  BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest         TEXT NOT NULL REFERENCES blobs (digest),
    linked_at      BIGINT NOT NULL,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX IF NOT EXISTS repository_blobs_by_digest ON repository_blobs (digest);

-- Manifests, with the exact bytes received.
CREATE TABLE IF NOT EXISTS manifests (
    repository_id   BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest          TEXT NOT NULL,
    media_type      TEXT NOT NULL,
    kind            TEXT NOT NULL,               -- 'image' | 'index' | 'artifact'
    -- 'client' (pushed) or 'registry' (made by the registry: the ORAS SIF artifacts). Unfiltered
    -- referrers listings show only client manifests; registry ones appear under their artifactType.
    origin          TEXT NOT NULL DEFAULT 'client',
    artifact_type   TEXT,                        -- as shown in the referrers API
    subject         TEXT,                        -- digest of the manifest this one refers to
    annotations     TEXT,                        -- JSON object or NULL, for the referrers API
    size            BIGINT NOT NULL,
    content         BLOB NOT NULL,               -- PostgreSQL: BYTEA
    pushed_at       BIGINT NOT NULL,
    last_pulled_at  BIGINT,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX IF NOT EXISTS manifests_by_subject ON manifests (repository_id, subject);

-- What each manifest references: blobs (config, layers) and child manifests (index entries).
CREATE TABLE IF NOT EXISTS manifest_references (
    repository_id    BIGINT NOT NULL,
    manifest_digest  TEXT NOT NULL,
    target_digest    TEXT NOT NULL,
    target_kind      TEXT NOT NULL,              -- 'blob' | 'manifest'
    PRIMARY KEY (repository_id, manifest_digest, target_digest),
    FOREIGN KEY (repository_id, manifest_digest) REFERENCES manifests (repository_id, digest) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS manifest_references_by_target ON manifest_references (repository_id, target_digest);

CREATE TABLE IF NOT EXISTS tags (
    repository_id   BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    digest          TEXT NOT NULL,
    pushed_at       BIGINT NOT NULL,
    last_pulled_at  BIGINT,
    -- 'client' (pushed) or 'registry' (derived: the farm's ORAS tags `T.sif`, `T.<arch>.sif`).
    -- Derived tags resolve like any tag but are never listed or counted (tags/list, retention):
    -- clients see exactly the tags they pushed. A client tag of the same name wins over a
    -- derived one. Stores made before this column get it from `meta::migrate` (guarded ALTER).
    origin          TEXT NOT NULL DEFAULT 'client',
    PRIMARY KEY (repository_id, name)
);
CREATE INDEX IF NOT EXISTS tags_by_digest ON tags (repository_id, digest);

-- The outbox: events written in the same transaction as the change they describe, consumed by
-- the SIF build farm (and later webhooks). Nothing is lost between a push and its build.
CREATE TABLE IF NOT EXISTS events (
    id           INTEGER PRIMARY KEY,            -- PostgreSQL: BIGINT GENERATED ALWAYS AS IDENTITY
    kind         TEXT NOT NULL,                  -- 'manifest_pushed' | 'tag_pushed' | 'manifest_deleted' | 'tag_deleted'
    repository   TEXT NOT NULL,
    digest       TEXT NOT NULL,
    tag          TEXT,
    media_type   TEXT,
    created_at   BIGINT NOT NULL,
    consumed_at  BIGINT
);
CREATE INDEX IF NOT EXISTS events_pending ON events (consumed_at, id);

-- The SIF build queue: one job per (manifest digest, platform), whatever the number of tags or
-- repositories naming that image, so nothing is ever built twice.
CREATE TABLE IF NOT EXISTS build_jobs (
    id               INTEGER PRIMARY KEY,        -- PostgreSQL: BIGINT GENERATED ALWAYS AS IDENTITY
    manifest_digest  TEXT NOT NULL,
    platform         TEXT NOT NULL,              -- os/arch[/variant]
    repository       TEXT NOT NULL,              -- a repository holding the image (for the deffile)
    state            TEXT NOT NULL,              -- 'queued' | 'building' | 'ready' | 'failed'
    attempts         BIGINT NOT NULL DEFAULT 0,
    not_before       BIGINT NOT NULL DEFAULT 0,  -- retry back-off
    lease_owner      TEXT,                       -- worker holding the job while building
    lease_expires    BIGINT,
    progress         TEXT,                       -- last step the worker reported
    failure          TEXT,                       -- reason of the last failure
    log              TEXT,                       -- build log (tail kept bounded by the worker)
    backend          TEXT,
    builder          TEXT,
    sif_digest       TEXT,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    UNIQUE (manifest_digest, platform)
);
CREATE INDEX IF NOT EXISTS build_jobs_by_state ON build_jobs (state, not_before, id);

-- Built SIFs: the file is a blob in the blob store (so ORAS pulls serve the same bytes).
CREATE TABLE IF NOT EXISTS sifs (
    digest           TEXT PRIMARY KEY,           -- sha256 of the SIF file
    manifest_digest  TEXT NOT NULL,
    platform         TEXT NOT NULL,
    size             BIGINT NOT NULL,
    squashfs_offset  BIGINT NOT NULL,
    squashfs_size    BIGINT NOT NULL,
    backend          TEXT NOT NULL,
    builder          TEXT NOT NULL,
    compression      TEXT NOT NULL,
    duration_ms      BIGINT NOT NULL,
    created_at       BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS sifs_by_manifest ON sifs (manifest_digest, platform);

-- The enroot image (pyxis's squashfs: the SIF's root filesystem plus /etc/rc, /etc/environment,
-- /etc/fstab) built with a SIF: a blob too, referenced by this row as the SIF is by its record,
-- and dropped with it. A SIF without a row has none (built before schema 6, or by a backend
-- that makes none).
CREATE TABLE IF NOT EXISTS enroot_images (
    sif_digest       TEXT PRIMARY KEY,           -- sifs.digest
    digest           TEXT NOT NULL,              -- sha256 of the squashfs file
    size             BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS enroot_images_by_digest ON enroot_images (digest);

-- Derivations of an enroot image for a ready SIF that has none (built before schema 6, or an
-- apptainer build whose derivation failed): the SIF is never rebuilt, the native converter
-- writes the enroot image from the same layers (src/farm/derive.rs). One per image and platform,
-- like the build it completes; priority 0 when a `/sif/<ref>/enroot` request asked for it (claimed
-- before builds: someone waits), 1 when start-up queued it for a SIF without one (after every
-- build). `repository` is where the layers are read and the image is linked.
CREATE TABLE IF NOT EXISTS enroot_jobs (
    id               INTEGER PRIMARY KEY,        -- PostgreSQL: BIGINT GENERATED ALWAYS AS IDENTITY
    manifest_digest  TEXT NOT NULL,
    platform         TEXT NOT NULL,
    repository       TEXT NOT NULL,
    sif_digest       TEXT NOT NULL,              -- sifs.digest the image is for
    priority         BIGINT NOT NULL,            -- 0 requested, 1 backfill
    state            TEXT NOT NULL,              -- 'queued' | 'building' | 'ready' | 'failed'
    attempts         BIGINT NOT NULL DEFAULT 0,
    not_before       BIGINT NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires    BIGINT,
    progress         TEXT,
    failure          TEXT,
    log              TEXT,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    UNIQUE (manifest_digest, platform)
);
CREATE INDEX IF NOT EXISTS enroot_jobs_by_state ON enroot_jobs (state, priority, not_before, id);
CREATE INDEX IF NOT EXISTS enroot_jobs_by_sif ON enroot_jobs (sif_digest);

-- Identities (src/meta/users.rs). A user's name is also their namespace (`alice/...`), and so is
-- a group's, which is why the two share one name space (enforced by the code that creates them).
CREATE TABLE IF NOT EXISTS users (
    name           TEXT PRIMARY KEY,
    uid            BIGINT UNIQUE,                -- POSIX uid for MUNGE; NULL when not a host user
    password_hash  TEXT,                         -- PHC argon2id, or bcrypt from an htpasswd import; NULL: no password login
    is_admin       BIGINT NOT NULL DEFAULT 0,    -- 0 | 1 (portable boolean)
    created_at     BIGINT NOT NULL,
    -- Notifications (src/meta/notifications.rs; migration 3 adds both to older stores).
    email          TEXT,                         -- where SIF ready/failed mail goes; NULL: none
    notify         TEXT NOT NULL DEFAULT 'none'  -- 'none' | 'mail' | 'webhook' | 'both'
);

CREATE TABLE IF NOT EXISTS user_groups (           -- "groups" is a keyword in PostgreSQL >= 11
    name        TEXT PRIMARY KEY,
    created_at  BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS group_members (
    group_name  TEXT NOT NULL REFERENCES user_groups (name) ON DELETE CASCADE,
    user_name   TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    role        TEXT NOT NULL,                   -- 'member' (read-write) | 'read-only'
    added_at    BIGINT NOT NULL,
    PRIMARY KEY (group_name, user_name)
);
CREATE INDEX IF NOT EXISTS group_members_by_user ON group_members (user_name);

-- Personal access tokens. Only a SHA-256 of the secret is kept: the secret is 256 random bits,
-- so a slow password hash would add nothing but latency to every CI request.
CREATE TABLE IF NOT EXISTS access_tokens (
    id            TEXT PRIMARY KEY,              -- public part of the token, shown by `token list`
    user_name     TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    description   TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    scope         TEXT NOT NULL,                 -- 'read' | 'read-write'
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,                        -- NULL: never
    last_used_at  BIGINT
);
CREATE INDEX IF NOT EXISTS access_tokens_by_user ON access_tokens (user_name);

-- Audit trail (src/audit, src/meta/audit.rs): the index of DATA/audit/audit.jsonl, one row per
-- record, so queries filter in SQL and then read the records from the file at `file_offset`.
-- `hash` repeats the record's chain hash: rewriting the file's chain also needs this table.
CREATE TABLE IF NOT EXISTS audit_events (
    seq          BIGINT PRIMARY KEY,
    time_ms      BIGINT NOT NULL,
    user_name    TEXT,
    action       TEXT NOT NULL,
    repository   TEXT,
    digest       TEXT,
    outcome      TEXT NOT NULL,
    file_offset  BIGINT NOT NULL,
    hash         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_events_by_time ON audit_events (time_ms);
CREATE INDEX IF NOT EXISTS audit_events_by_user ON audit_events (user_name, time_ms);
CREATE INDEX IF NOT EXISTS audit_events_by_repository ON audit_events (repository, time_ms);

-- Online garbage collection (src/lifecycle, src/meta/gc.rs). What changed since the last prune,
-- so that a run costs what changed, never a walk of the store.
-- Manifests that lost an anchor (their last tag, their parent index, their subject) or were
-- pushed untagged: the sweep re-checks exactly these. `since` = 0 means "due now" (a cascade of
-- a deletion that was already decided).
CREATE TABLE IF NOT EXISTS gc_manifest_candidates (
    repository_id  BIGINT NOT NULL,
    digest         TEXT NOT NULL,
    since          BIGINT NOT NULL,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX IF NOT EXISTS gc_manifest_candidates_by_since ON gc_manifest_candidates (since, repository_id, digest);
-- Image digests deleted from some repository: if no repository holds them any more, their SIFs,
-- build jobs and (through the SIF blobs' reference counts) bytes go.
CREATE TABLE IF NOT EXISTS gc_image_candidates (
    digest  TEXT PRIMARY KEY,
    since   BIGINT NOT NULL
);
-- "Does any repository still hold this digest?" without a table scan.
CREATE INDEX IF NOT EXISTS manifests_by_digest ON manifests (digest);

-- Quotas, usage and scrub (src/quota, src/meta/quota.rs, src/lifecycle/scrub.rs).
-- Per-namespace quota overrides set live by admins; a namespace without a row gets the
-- configured default of its kind ([quota] default_user / default_group), if any.
CREATE TABLE IF NOT EXISTS quotas (
    namespace    TEXT PRIMARY KEY,
    limit_bytes  BIGINT,                         -- NULL: unlimited, whatever the default says
    updated_at   BIGINT NOT NULL,
    updated_by   TEXT NOT NULL
);

-- What each namespace uses, kept in the same transaction as every link, unlink, manifest insert
-- and delete (src/meta/quota.rs `count_*`), so a quota check reads one row. A blob (SIFs
-- included) linked into several repositories of the namespace counts once, as in the recount
-- (`namespace_usage`), which the scrub compares these with and repairs them to.
CREATE TABLE IF NOT EXISTS namespace_usage (
    namespace       TEXT PRIMARY KEY,
    blob_bytes      BIGINT NOT NULL DEFAULT 0,   -- layers, configs, SIFs
    manifest_bytes  BIGINT NOT NULL DEFAULT 0
);

-- Blobs (SIFs included) whose bytes failed a scrub: moved to DATA/quarantine and hidden from
-- reads until the same digest is uploaded (or rebuilt) again, which deletes the row.
CREATE TABLE IF NOT EXISTS blob_quarantine (
    digest         TEXT PRIMARY KEY,
    actual_digest  TEXT NOT NULL,                -- what the bytes hashed to
    path           TEXT NOT NULL,                -- where they went, under the data directory
    detected_at    BIGINT NOT NULL
);

-- Notifications (src/notifications, src/meta/notifications.rs).
-- Who pushed each manifest (the latest push), so the farm can tell them when its SIF is ready
-- or failed. Goes with the manifest.
CREATE TABLE IF NOT EXISTS manifest_pushers (
    repository_id  BIGINT NOT NULL,
    digest         TEXT NOT NULL,
    user_name      TEXT NOT NULL,
    pushed_at      BIGINT NOT NULL,
    PRIMARY KEY (repository_id, digest),
    FOREIGN KEY (repository_id, digest) REFERENCES manifests (repository_id, digest) ON DELETE CASCADE
);
-- The notification outbox: rows written in the same transaction as the build outcome they
-- announce, one per channel, delivered (at least once) and retried with back-off by the server.
CREATE TABLE IF NOT EXISTS notification_outbox (
    id               INTEGER PRIMARY KEY,        -- PostgreSQL: BIGINT GENERATED ALWAYS AS IDENTITY
    event_id         TEXT NOT NULL,              -- CloudEvents id / Message-ID, shared by the channels of one event
    channel          TEXT NOT NULL,              -- 'mail' | 'webhook'
    event            TEXT NOT NULL,              -- 'ready' | 'failed'
    user_name        TEXT NOT NULL,              -- the pusher told
    address          TEXT,                       -- mail: the recipient when the event happened
    job_id           BIGINT NOT NULL,
    repository       TEXT NOT NULL,
    tag              TEXT,
    manifest_digest  TEXT NOT NULL,
    platform         TEXT NOT NULL,
    sif_digest       TEXT,
    sif_size         BIGINT,
    reason           TEXT,
    log_tail         TEXT,
    state            TEXT NOT NULL,              -- 'pending' | 'delivered' | 'failed' | 'skipped'
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    last_error       TEXT,                       -- never a secret: transport errors only
    created_at       BIGINT NOT NULL,
    finished_at      BIGINT,
    UNIQUE (event_id, channel)
);
CREATE INDEX IF NOT EXISTS notification_outbox_due ON notification_outbox (state, next_attempt_at, id);
-- Remote builders (src/meta/builders.rs, src/auth/builder.rs): credentials that can do nothing
-- but build, over /builder/v1. `hpcb_<token_id>_<secret>`; only SHA-256(secret) is stored.
CREATE TABLE IF NOT EXISTS builders (
    name           TEXT PRIMARY KEY,
    token_id       TEXT NOT NULL UNIQUE,
    secret_sha256  TEXT NOT NULL,
    platforms      TEXT NOT NULL,                -- comma-separated os/arch[/variant]
    job_id         BIGINT,                       -- set: a one-job credential (Slurm executor)
    created_by     TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT,
    last_used_at   BIGINT
);

-- Builds submitted as Slurm jobs (src/farm/slurm.rs): one row while the Slurm job may run.
CREATE TABLE IF NOT EXISTS slurm_builds (
    job_id         BIGINT PRIMARY KEY,           -- build_jobs.id
    slurm_job      TEXT NOT NULL,
    builder        TEXT NOT NULL,                -- the one-job credential's name
    submitted_at   BIGINT NOT NULL
);
-- Long admin work run as background jobs (src/admin_jobs, src/meta/admin_jobs.rs): a scrub of a
-- large store takes days. Progress and a checkpoint are written as the job goes, so `admin jobs`
-- shows where it is and a restarted server resumes it from the checkpoint.
CREATE TABLE IF NOT EXISTS admin_jobs (
    id                INTEGER PRIMARY KEY,       -- PostgreSQL: BIGINT GENERATED ALWAYS AS IDENTITY
    kind              TEXT NOT NULL,             -- 'scrub'
    state             TEXT NOT NULL,             -- 'running' | 'done' | 'failed' | 'cancelled'
    params            TEXT NOT NULL,             -- JSON, as started
    progress          TEXT,                      -- JSON, the last progress written
    checkpoint        TEXT,                      -- JSON, where a resumed run continues
    result            TEXT,                      -- JSON report of a finished job
    error             TEXT,
    cancel_requested  BIGINT NOT NULL DEFAULT 0,
    created_by        TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    finished_at       BIGINT
);
CREATE INDEX IF NOT EXISTS admin_jobs_by_state ON admin_jobs (state, id);
