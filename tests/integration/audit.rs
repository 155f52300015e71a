//! The audit trail (issue 4, point 5): a scripted session with real clients leaves complete
//! records; `admin audit` filters; `admin audit verify` catches an edited, a removed and a
//! truncated record; brute-force logins hit 429 and are on record. Also the POSIX-groups switch.
//! Every server here runs WITHOUT `--dev`; users are made with the real CLI.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::sif::BUILD_DEADLINE;
use crate::support::users::*;
use crate::support::*;

/// Every key a record always carries (null when unknown).
const FIELDS: &[&str] = &[
    "seq",
    "time",
    "user",
    "uid",
    "auth",
    "client",
    "user_agent",
    "action",
    "repository",
    "reference",
    "digest",
    "outcome",
    "status",
    "detail",
    "bytes",
    "slurm_job_id",
    "prev",
    "hash",
];

fn admin_env() -> [(&'static str, &'static str); 2] {
    [
        ("HPC_REGISTRY_USER", "boss"),
        ("HPC_REGISTRY_PASSWORD", "boss-password"),
    ]
}

/// `hpc-registry admin audit --json ARGS` through the admin API as `boss`.
fn audit_online(server: &Server, args: &[&str]) -> Vec<Value> {
    let url = server.base_url();
    let mut all = vec!["admin", "audit", "--json", "--server", url.as_str()];
    all.extend_from_slice(args);
    parse_lines(&cli(&all, &admin_env(), ""))
}

/// `hpc-registry admin audit --json ARGS` offline on the data directory.
fn audit_offline(server: &Server, args: &[&str]) -> Vec<Value> {
    let dd = server.data_dir().display().to_string();
    let mut all = vec!["admin", "audit", "--json", "--data-dir", dd.as_str()];
    all.extend_from_slice(args);
    parse_lines(&cli(&all, &[], ""))
}

fn parse_lines(out: &str) -> Vec<Value> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn actions(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["action"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The one record matching `pred`, with every field present; panics listing what there is.
fn find<'a>(records: &'a [Value], what: &str, pred: impl Fn(&Value) -> bool) -> &'a Value {
    let r = records.iter().find(|r| pred(r)).unwrap_or_else(|| {
        panic!(
            "no {what} record among:\n{}",
            records
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    let obj = r.as_object().expect("record is an object");
    for f in FIELDS {
        assert!(obj.contains_key(*f), "{what}: field {f} missing in {r}");
    }
    assert_eq!(obj.len(), FIELDS.len(), "{what}: unexpected fields in {r}");
    r
}

fn s<'a>(r: &'a Value, key: &str) -> &'a str {
    r[key].as_str().unwrap_or_default()
}

#[test]
fn scripted_session_records_are_present_and_complete() {
    let setup = Setup::new().user("alice", &[]).user("boss", &["--admin"]);
    let server = Server::start_secure(&setup, &[]);
    let alice = Creds::of("alice");

    // 1. skopeo pushes a runnable image with alice's password (token flow).
    push_busybox_ok(
        &server,
        &alice,
        "alice/tool:1",
        &["/bin/sh", "-c", "echo audited"],
    );
    // 2. A wrong password.
    let r = send(
        "GET",
        &server.url("/v2/"),
        &Auth::Basic(&Creds::new("alice", "not-her-password")),
        None,
    );
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // 3. A manifest pull from a batch job.
    let pull = http()
        .get(server.url("/v2/alice/tool/manifests/1"))
        .basic_auth("alice", Some(&alice.secret))
        .header("accept", ACCEPT_ALL_MANIFESTS)
        .header("user-agent", "audit-test/1")
        .header("x-slurm-job-id", "4711")
        .send()
        .unwrap();
    assert_eq!(pull.status(), StatusCode::OK);
    let manifest_digest = pull
        .headers()
        .get("docker-content-digest")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let manifest_len = pull.bytes().unwrap().len() as u64;
    // 4. The SIF, fetched like `curl` in a job (polls while it builds).
    let until = Instant::now() + BUILD_DEADLINE;
    let sif = loop {
        let r = Reply::from(
            http()
                .get(server.url("/sif/alice/tool:1"))
                .basic_auth("alice", Some(&alice.secret))
                .header("user-agent", "curl/8")
                .header("x-slurm-job-id", "4712")
                .send()
                .unwrap(),
        );
        match r.status {
            StatusCode::OK => break r.body,
            StatusCode::ACCEPTED => {}
            _ => panic!("GET /sif/alice/tool:1: {}", r.describe()),
        }
        assert!(Instant::now() < until, "no SIF after {BUILD_DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let sif_digest = sha256_digest(&sif);
    // 5. Token create and revoke through the CLI (admin API, as alice).
    let url = server.base_url();
    let alice_env = [
        ("HPC_REGISTRY_USER", "alice"),
        ("HPC_REGISTRY_PASSWORD", "alice-password"),
    ];
    cli(
        &["token", "create", "--server", &url, "--description", "ci"],
        &alice_env,
        "",
    );
    let list = cli(
        &["token", "list", "--json", "--server", &url],
        &alice_env,
        "",
    );
    let list: Value = serde_json::from_str(&list).unwrap();
    let token_id = list[0]["id"].as_str().expect("token id").to_owned();
    cli(
        &["token", "revoke", &token_id, "--server", &url],
        &alice_env,
        "",
    );
    // 6. A tag deleted.
    let r = send(
        "DELETE",
        &server.url("/v2/alice/tool/manifests/1"),
        &Auth::Basic(&alice),
        None,
    );
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.describe());

    let records = audit_online(&server, &[]);
    let user = |r: &Value| s(r, "user") == "alice";
    // The offline CLI made the users before the server started: recorded as the OS user.
    let added = find(&records, "user.add (offline)", |r| {
        s(r, "action") == "user.add" && s(r, "reference") == "alice"
    });
    assert_eq!(
        (s(added, "client"), s(added, "auth"), s(added, "outcome")),
        ("local", "local", "ok")
    );
    assert!(
        added["user"].is_string() && added["uid"].is_u64(),
        "{added}"
    );

    let login = find(&records, "auth.success", |r| {
        user(r) && s(r, "action") == "auth.success"
    });
    assert_eq!(
        (s(login, "auth"), s(login, "client"), s(login, "outcome")),
        ("password", "127.0.0.1", "ok")
    );
    assert!(!s(login, "user_agent").is_empty(), "{login}");

    let push = find(&records, "tag.push", |r| {
        user(r) && s(r, "action") == "tag.push" && s(r, "repository") == "alice/tool"
    });
    assert_eq!(
        (
            s(push, "reference"),
            s(push, "digest"),
            s(push, "auth"),
            s(push, "outcome")
        ),
        ("1", manifest_digest.as_str(), "bearer", "ok")
    );
    assert_eq!(push["status"], 201);
    assert_eq!(push["bytes"].as_u64(), Some(manifest_len), "{push}");

    let failure = find(&records, "auth.failure", |r| {
        s(r, "action") == "auth.failure" && s(r, "user") == "alice"
    });
    assert_eq!(
        (
            s(failure, "outcome"),
            s(failure, "auth"),
            s(failure, "client")
        ),
        ("denied", "password", "127.0.0.1")
    );
    assert_eq!(failure["status"], 401);
    assert!(!s(failure, "detail").is_empty());

    let pulled = find(&records, "manifest.pull", |r| {
        s(r, "action") == "manifest.pull" && s(r, "slurm_job_id") == "4711"
    });
    assert_eq!(
        (
            s(pulled, "user"),
            s(pulled, "auth"),
            s(pulled, "user_agent"),
            s(pulled, "repository"),
            s(pulled, "reference"),
            s(pulled, "digest"),
        ),
        (
            "alice",
            "password",
            "audit-test/1",
            "alice/tool",
            "1",
            manifest_digest.as_str()
        )
    );
    assert_eq!(pulled["bytes"].as_u64(), Some(manifest_len));

    let fetched = find(&records, "sif.fetch", |r| {
        s(r, "action") == "sif.fetch" && s(r, "slurm_job_id") == "4712"
    });
    assert_eq!(
        (
            s(fetched, "user"),
            s(fetched, "repository"),
            s(fetched, "reference"),
            s(fetched, "digest"),
            s(fetched, "outcome"),
            s(fetched, "user_agent")
        ),
        (
            "alice",
            "alice/tool",
            "alice/tool:1",
            sif_digest.as_str(),
            "ok",
            "curl/8"
        )
    );
    assert_eq!(fetched["bytes"].as_u64(), Some(sif.len() as u64));
    // Polls answered 202 are not fetches.
    assert_eq!(
        records
            .iter()
            .filter(|r| s(r, "action") == "sif.fetch")
            .count(),
        1
    );

    let created = find(&records, "token.create", |r| {
        s(r, "action") == "token.create"
    });
    assert_eq!(
        (
            s(created, "user"),
            s(created, "reference"),
            s(created, "outcome")
        ),
        ("alice", token_id.as_str(), "ok")
    );
    let revoked = find(&records, "token.revoke", |r| {
        s(r, "action") == "token.revoke"
    });
    assert_eq!(
        (s(revoked, "user"), s(revoked, "reference")),
        ("alice", token_id.as_str())
    );
    let deleted = find(&records, "tag.delete", |r| s(r, "action") == "tag.delete");
    assert_eq!(
        (
            s(deleted, "repository"),
            s(deleted, "reference"),
            s(deleted, "outcome")
        ),
        ("alice/tool", "1", "ok")
    );

    let start = find(&records, "build.start", |r| {
        s(r, "action") == "build.start" && s(r, "digest") == manifest_digest
    });
    assert_eq!(
        (s(start, "user"), s(start, "repository")),
        ("system", "alice/tool")
    );
    let end = find(&records, "build.end", |r| {
        s(r, "action") == "build.end" && s(r, "digest") == manifest_digest
    });
    assert_eq!(s(end, "outcome"), "ready");
    assert_eq!(end["bytes"].as_u64(), Some(sif.len() as u64));

    // The chain: seq 1.. without gaps, each prev the hash before.
    let all = audit_offline(&server, &["--limit", "100000"]);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r["seq"].as_u64(), Some(i as u64 + 1));
        if i > 0 {
            assert_eq!(r["prev"], all[i - 1]["hash"]);
        }
    }
    // No secret reached the file.
    let file = std::fs::read_to_string(server.data_dir().join("audit/audit.jsonl")).unwrap();
    assert!(!file.contains("alice-password") && !file.contains("not-her-password"));
    assert!(
        !file.contains("hpcr_"),
        "a token secret reached the audit log"
    );
}

#[test]
fn admin_audit_filters_and_verify_detects_tampering() {
    let setup = Setup::new()
        .user("alice", &[])
        .user("bob", &[])
        .user("boss", &["--admin"]);
    let mut server = Server::start_secure(&setup, &[]);
    let (alice, bob) = (Creds::of("alice"), Creds::of("bob"));
    push_as(&server, &alice, "alice/a", "1");
    push_as(&server, &bob, "bob/b", "1");
    let r = send(
        "GET",
        &server.url("/v2/"),
        &Auth::Basic(&Creds::new("bob", "wrong")),
        None,
    );
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let by_alice = audit_online(&server, &["--user", "alice"]);
    assert!(!by_alice.is_empty());
    assert!(
        by_alice.iter().all(|r| s(r, "user") == "alice"),
        "{by_alice:?}"
    );
    assert!(actions(&by_alice).contains(&"tag.push".to_owned()));
    let bob_repo = audit_online(&server, &["--repo", "bob/b"]);
    assert!(!bob_repo.is_empty());
    assert!(bob_repo.iter().all(|r| s(r, "repository") == "bob/b"));
    let failures = audit_online(&server, &["--action", "auth.failure"]);
    assert_eq!(actions(&failures), vec!["auth.failure"]);
    assert_eq!(s(&failures[0], "user"), "bob");
    // A family: every tag.* record, and only those.
    let tags = audit_online(&server, &["--action", "tag"]);
    assert_eq!(actions(&tags), vec!["tag.push", "tag.push"]);
    let hour = audit_online(&server, &["--since", "1h", "--action", "tag"]);
    assert_eq!(actions(&hour), vec!["tag.push", "tag.push"]);
    assert!(audit_online(&server, &["--until", "2000-01-01"]).is_empty());
    assert!(audit_online(&server, &["--since", "2100-01-01T00:00:00Z"]).is_empty());
    let recent = audit_online(
        &server,
        &["--since", "1h", "--action", "tag", "--user", "bob"],
    );
    assert_eq!(recent.len(), 1);
    let limited = audit_online(&server, &["--limit", "2"]);
    assert_eq!(limited.len(), 2);
    // Offline, on the data directory (read-only: works beside the running server).
    assert_eq!(
        audit_offline(&server, &["--repo", "bob/b"]).len(),
        bob_repo.len()
    );
    // Bad filters are named; non-admins are refused.
    let url = server.base_url();
    let out = cli_output(
        &["admin", "audit", "--since", "someday", "--server", &url],
        &admin_env(),
        "",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("since"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli_output(
        &["admin", "audit", "--server", &url],
        &[
            ("HPC_REGISTRY_USER", "alice"),
            ("HPC_REGISTRY_PASSWORD", "alice-password"),
        ],
        "",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));
    let r = send(
        "GET",
        &server.url("/admin/audit?user=bob"),
        &Auth::Basic(&Creds::of("boss")),
        None,
    );
    assert_eq!(r.status, StatusCode::OK);
    assert!(r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .all(|r| s(r, "user") == "bob"));
    let r = send(
        "GET",
        &server.url("/admin/audit"),
        &Auth::Basic(&alice),
        None,
    );
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The table form.
    let table = cli(
        &["admin", "audit", "--server", &url, "--action", "tag"],
        &admin_env(),
        "",
    );
    assert!(
        table.starts_with("TIME") && table.contains("tag.push") && table.contains("bob/b"),
        "{table}"
    );

    // verify: intact, online and offline.
    cli(
        &["admin", "audit", "verify", "--server", &url],
        &admin_env(),
        "",
    );
    let dd = server.data_dir().display().to_string();
    cli(&["admin", "audit", "verify", "--data-dir", &dd], &[], "");

    server.terminate();
    let path = server.data_dir().join("audit/audit.jsonl");
    let original = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    assert!(lines.len() > 6, "{original}");
    let file = path.display().to_string();
    let write = |ls: &[&str]| {
        std::fs::write(
            &path,
            ls.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap()
    };
    let verify_fails = |args: &[&str]| {
        let out = cli_output(args, &[], "");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.status.success(),
            "verify passed on a tampered log:\n{text}"
        );
        text
    };

    // One line edited (alice's tag push now bob's): found, at its line.
    let k = lines
        .iter()
        .position(|l| l.contains("\"tag.push\"") && l.contains("\"alice\""))
        .expect("alice's push");
    let mut edited = lines.clone();
    let forged = lines[k].replacen("\"user\":\"alice\"", "\"user\":\"bob\"", 1);
    assert_ne!(forged, lines[k]);
    edited[k] = &forged;
    write(&edited);
    let text = verify_fails(&["admin", "audit", "verify", "--data-dir", &dd]);
    assert!(text.contains(&format!("line {}", k + 1)), "{text}");
    assert!(text.contains("edited"), "{text}");
    let text = verify_fails(&["admin", "audit", "verify", "--file", &file]);
    assert!(text.contains(&format!("line {}", k + 1)), "{text}");

    // One line removed from the middle.
    let mut removed = lines.clone();
    removed.remove(3);
    write(&removed);
    let text = verify_fails(&["admin", "audit", "verify", "--file", &file]);
    assert!(
        text.contains("line 4") && text.contains("missing"),
        "{text}"
    );

    // The last line removed: the file alone cannot tell; the index can.
    write(&lines[..lines.len() - 1]);
    cli(&["admin", "audit", "verify", "--file", &file], &[], "");
    let text = verify_fails(&["admin", "audit", "verify", "--data-dir", &dd]);
    assert!(text.contains("removed from the end"), "{text}");

    // Restored, it verifies again.
    std::fs::write(&path, &original).unwrap();
    cli(&["admin", "audit", "verify", "--data-dir", &dd], &[], "");
}

#[test]
fn brute_force_logins_hit_the_limit_and_are_recorded() {
    let setup = Setup::new().user("alice", &[]).user("boss", &["--admin"]);
    let server = Server::start_secure(&setup, &[]);
    let wrong = Creds::new("alice", "guess-1234");
    for i in 0..10 {
        let r = send("GET", &server.url("/v2/"), &Auth::Basic(&wrong), None);
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    for _ in 0..3 {
        let r = send("GET", &server.url("/v2/"), &Auth::Basic(&wrong), None);
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(r.header("retry-after").is_some());
    }
    // /token is limited too, for the right password as well.
    let r = send(
        "GET",
        &server.url("/token?service=hpc-registry"),
        &Auth::Basic(&Creds::of("alice")),
        None,
    );
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);

    let records = audit_online(&server, &["--action", "auth.failure", "--user", "alice"]);
    let outcome = |o: &str| {
        records
            .iter()
            .filter(|r| s(r, "outcome") == o)
            .collect::<Vec<_>>()
    };
    assert_eq!(outcome("denied").len(), 10, "{records:?}");
    let limited = outcome("rate-limited");
    assert_eq!(limited.len(), 4, "{records:?}");
    for r in &limited {
        assert_eq!(r["status"], 429);
        assert_eq!(s(r, "client"), "127.0.0.1");
    }
    assert!(limited.iter().any(|r| s(r, "reference") == "/token"));
    let file = std::fs::read_to_string(server.data_dir().join("audit/audit.jsonl")).unwrap();
    assert!(
        !file.contains("guess-1234"),
        "a tried password reached the audit log"
    );
}

#[test]
fn posix_groups_share_a_namespace_when_switched_on() {
    let group = "hpcreg-pgroup";
    ensure_host_group(group, &["pgann", "pgben"]);
    ensure_host_user("pgcat");
    let setup = Setup::new()
        .user("pgann", &[])
        .user("pgben", &[])
        .user("pgcat", &[]);
    let repo = format!("{group}/tool");

    // Off (the default): the host group means nothing.
    let server = Server::start_secure(&setup, &[]);
    let r = send(
        "POST",
        &server.url(&format!("/v2/{repo}/blobs/uploads/")),
        &Auth::Basic(&Creds::of("pgann")),
        None,
    );
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.describe());
    drop(server);

    // On: members push and pull, a non-member sees nothing.
    let server = Server::start_secure(&setup, &["--posix-groups"]);
    let pushed = push_as(&server, &Creds::of("pgann"), &repo, "1");
    let get = |who: &str| {
        send(
            "GET",
            &server.url(&format!("/v2/{repo}/manifests/1")),
            &Auth::Basic(&Creds::of(who)),
            None,
        )
    };
    let r = get("pgben");
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
    assert_eq!(r.body, pushed.manifest);
    assert_eq!(get("pgcat").status, StatusCode::NOT_FOUND);
    // The same through Docker's token flow: the granted scope includes the group's repository.
    let r = send(
        "GET",
        &server.url(&format!(
            "/token?service=hpc-registry&scope=repository:{repo}:pull,push"
        )),
        &Auth::Basic(&Creds::of("pgben")),
        None,
    );
    assert_eq!(r.status, StatusCode::OK);
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let r = send(
        "GET",
        &server.url(&format!("/v2/{repo}/manifests/1")),
        &Auth::Bearer(&token),
        None,
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
}

#[test]
fn a_slurm_jobs_sif_fetch_is_recorded_with_its_job_id_and_munge_identity() {
    use crate::support::slurm::SlurmCluster;
    let cluster = SlurmCluster::start();
    let uid = ensure_host_user("alice");
    let setup = Setup::new()
        .user("alice", &["--uid", &uid.to_string()])
        .user("boss", &["--admin"]);
    let server = Server::start_secure(&setup, &["--munge"]);
    let alice = Creds::of("alice");
    push_busybox_ok(
        &server,
        &alice,
        "alice/job:1",
        &["/bin/sh", "-c", "echo from-slurm"],
    );
    // The SIF is built before the job runs (the job itself would just poll the 202s).
    let until = Instant::now() + BUILD_DEADLINE;
    let expected = loop {
        let r = send(
            "GET",
            &server.url("/sif/alice/job:1"),
            &Auth::Basic(&alice),
            None,
        );
        if r.status == StatusCode::OK {
            break r.body;
        }
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.describe());
        assert!(Instant::now() < until, "no SIF after {BUILD_DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(300));
    };

    // The job: what a user puts in a batch script on a compute node.
    let out = cluster.out_dir();
    let name = unique("audit-fetch");
    let sif = out.join(format!("{name}.sif"));
    let script = format!(
        "#!/bin/sh\n\
         echo job=$SLURM_JOB_ID\n\
         curl -s -o \"{sif}\" -w 'status=%{{http_code}}\\n' \
         -H \"Authorization: MUNGE $(munge -n)\" -H \"X-Slurm-Job-Id: $SLURM_JOB_ID\" {url}\n",
        sif = sif.display(),
        url = server.url("/sif/alice/job:1")
    );
    let job = cluster.run_job_as("alice", &name, &script);
    assert!(
        job.output.contains("status=200"),
        "job {} ({}):\n{}",
        job.id,
        job.state,
        job.output
    );
    let fetched = std::fs::read(&sif).expect("the job's SIF");
    assert_eq!(sha256_digest(&fetched), sha256_digest(&expected));

    let records = audit_online(&server, &["--action", "sif.fetch", "--user", "alice"]);
    let r = find(&records, "the job's sif.fetch", |r| {
        s(r, "slurm_job_id") == job.id
    });
    assert_eq!(
        (s(r, "auth"), s(r, "outcome"), s(r, "digest")),
        ("munge", "ok", sha256_digest(&expected).as_str())
    );
    assert_eq!(r["uid"].as_u64(), Some(u64::from(uid)));
    assert_eq!(r["bytes"].as_u64(), Some(expected.len() as u64));
    assert!(s(r, "user_agent").starts_with("curl/"), "{r}");
}

#[test]
fn kill_9_under_traffic_leaves_a_chain_that_verifies_and_resumes() {
    let setup = Setup::new().user("alice", &[]).user("boss", &["--admin"]);
    let mut server = Server::start_secure(&setup, &[]);
    let alice = Creds::of("alice");
    push_as(&server, &alice, "alice/a", "1");
    let url = server.url("/v2/alice/a/manifests/1");
    let pullers: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let alice = Creds::of("alice");
                // Until the server is gone.
                while http()
                    .get(&url)
                    .basic_auth(&alice.user, Some(&alice.secret))
                    .header("accept", ACCEPT_ALL_MANIFESTS)
                    .send()
                    .is_ok()
                {}
            })
        })
        .collect();
    let file = server.data_dir().join("audit/audit.jsonl");
    let until = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&file)
        .unwrap_or_default()
        .lines()
        .count()
        < 300
    {
        assert!(Instant::now() < until, "no audit records under traffic");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill9();
    for p in pullers {
        p.join().unwrap();
    }
    // The restarted server resumes the chain (dropping a torn last line, indexing what the index
    // missed) and keeps recording.
    server.restart_secure();
    push_as(&server, &alice, "alice/a", "2");
    let tags = audit_online(&server, &["--action", "tag.push"]);
    assert_eq!(
        tags.iter().map(|r| s(r, "reference")).collect::<Vec<_>>(),
        vec!["1", "2"]
    );
    let url = server.base_url();
    cli(
        &["admin", "audit", "verify", "--server", &url],
        &admin_env(),
        "",
    );
    server.terminate();
    let dd = server.data_dir().display().to_string();
    cli(&["admin", "audit", "verify", "--data-dir", &dd], &[], "");
}
