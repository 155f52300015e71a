//! Multi-user registry: logins (Docker's token flow, access tokens, MUNGE), per-user and group
//! namespaces, "not even see them" privacy, rate limiting, TLS, the admin API and the offline CLI.
//! Every server here runs WITHOUT `--dev`; users are made with the real CLI.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::sif::{skopeo, BUILD_DEADLINE};
use crate::support::users::*;
use crate::support::*;

/// `alice` and `bob`, plain users.
fn alice_and_bob() -> Setup {
    Setup::new().user("alice", &[]).user("bob", &[])
}

fn catalog(server: &Server, auth: &Auth) -> Vec<String> {
    let r = send("GET", &server.url("/v2/_catalog"), auth, None);
    assert_eq!(r.status, StatusCode::OK, "catalog: {}", r.describe());
    r.json()["repositories"]
        .as_array()
        .expect("repositories")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A runnable busybox image loaded into the shared Docker engine; returns its local name.
fn load_busybox_into_docker() -> String {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("oci");
    busybox_oci_layout(&layout, "1", &["/bin/sh", "-c", "echo hi"]);
    let local = format!("{}:1", unique("hpcreg-auth/busybox"));
    let archive = tmp.path().join("busybox.tar");
    oci_layout_to_docker_archive(&layout, "1", &archive, &local);
    run(docker().cmd().arg("load").arg("-i").arg(&archive));
    local
}

#[test]
fn docker_login_push_pull_isolation_and_access_tokens() {
    let server = Server::start_secure(&alice_and_bob(), &[]);
    let host = server.host();
    let (alice, bob) = (DockerUser::new(), DockerUser::new());

    // A wrong password fails, the right one works (GET /v2/ → 401 Bearer → /token with Basic).
    let out = alice.login(&host, &Creds::new("alice", "not-her-password"));
    assert!(
        !out.status.success(),
        "docker login with a wrong password succeeded:\n{}",
        text(&out)
    );
    let out = alice.login(&host, &Creds::of("alice"));
    assert!(
        out.status.success(),
        "docker login as alice failed:\n{}",
        text(&out)
    );

    // alice pushes into her namespace, removes the image and pulls it back.
    let local = load_busybox_into_docker();
    let remote = format!("{host}/alice/busybox:1");
    run(alice.cmd().args(["tag", &local, &remote]));
    run(alice.cmd().args(["push", &remote]));
    run(alice.cmd().args(["rmi", &remote]));
    run(alice.cmd().args(["pull", &remote]));
    run(alice.cmd().args(["rmi", &remote]));

    // bob can neither push into alice's namespace nor pull from it.
    let out = bob.login(&host, &Creds::of("bob"));
    assert!(
        out.status.success(),
        "docker login as bob failed:\n{}",
        text(&out)
    );
    let intruder = format!("{host}/alice/busybox:from-bob");
    run(bob.cmd().args(["tag", &local, &intruder]));
    let out = run_output(bob.cmd().args(["push", &intruder]));
    assert!(
        !out.status.success(),
        "bob pushed into alice/…:\n{}",
        text(&out)
    );
    assert!(
        text(&out).contains("denied") && text(&out).contains("bob/…"),
        "bob's refused push should say DENIED and where he may push:\n{}",
        text(&out)
    );
    let out = run_output(bob.cmd().args(["pull", &remote]));
    assert!(
        !out.status.success(),
        "bob pulled alice's image:\n{}",
        text(&out)
    );
    run(bob.cmd().args(["rmi", &intruder]));

    // bob pushes into his own namespace; each catalog shows only its owner's repositories.
    let own = format!("{host}/bob/busybox:1");
    run(bob.cmd().args(["tag", &local, &own]));
    run(bob.cmd().args(["push", &own]));
    run(bob.cmd().args(["rmi", &own]));
    let bobs = Creds::of("bob");
    let alices = Creds::of("alice");
    assert_eq!(catalog(&server, &Auth::Basic(&bobs)), vec!["bob/busybox"]);
    assert_eq!(
        catalog(&server, &Auth::Basic(&alices)),
        vec!["alice/busybox"]
    );
    let tags = send(
        "GET",
        &server.url("/v2/alice/busybox/tags/list"),
        &Auth::Basic(&alices),
        None,
    );
    assert_eq!(
        user_tags(
            &tags.json()["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        ),
        vec!["1"]
    );

    // An access token, made by alice herself through the admin API, works with docker login.
    let env = [
        ("HPC_REGISTRY_SERVER", server.base_url()),
        ("HPC_REGISTRY_USER", "alice".to_owned()),
        ("HPC_REGISTRY_PASSWORD", alices.secret.clone()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let token = cli(&["token", "create", "--description", "docker"], &env, "");
    let token = token.trim();
    assert!(token.starts_with("hpcr_"), "token create printed {token:?}");
    let ci = DockerUser::new();
    let out = ci.login(&host, &Creds::new("alice", token));
    assert!(
        out.status.success(),
        "docker login with an access token failed:\n{}",
        text(&out)
    );
    run(ci.cmd().args(["pull", &remote]));
    run(ci.cmd().args(["rmi", &remote]));
    // A read-only token logs in and pulls, but cannot push.
    let read = cli(&["token", "create", "--scope", "read"], &env, "");
    let reader = DockerUser::new();
    let out = reader.login(&host, &Creds::new("alice", read.trim()));
    assert!(
        out.status.success(),
        "docker login with a read-only token:\n{}",
        text(&out)
    );
    let again = format!("{host}/alice/busybox:read-only");
    run(reader.cmd().args(["tag", &local, &again]));
    let out = run_output(reader.cmd().args(["push", &again]));
    assert!(
        !out.status.success(),
        "a read-only token pushed:\n{}",
        text(&out)
    );
    run(reader.cmd().args(["rmi", &again, &local]));
    let listed = cli(&["token", "list"], &env, "");
    assert!(
        listed.contains("docker") && listed.contains("read"),
        "token list:\n{listed}"
    );
    assert!(
        !listed.contains(token),
        "token list shows a secret:\n{listed}"
    );
}

#[test]
fn another_users_digests_are_invisible_and_unmountable() {
    let server = Server::start_secure(&alice_and_bob(), &[]);
    let (alice, bob) = (Creds::of("alice"), Creds::of("bob"));
    let a = push_as(&server, &alice, "alice/secret", "1");
    let missing = sha256_digest(b"pushed by nobody, ever");
    let as_bob = Auth::Basic(&bob);
    let url = |p: &str| server.url(p);

    // Blobs and manifests by digest, through alice's repository: exactly like a missing digest.
    for (kind, d) in [
        ("blobs", &a.layer_digest),
        ("blobs", &a.config_digest),
        ("manifests", &a.digest),
    ] {
        let hidden = send(
            "GET",
            &url(&format!("/v2/alice/secret/{kind}/{d}")),
            &as_bob,
            None,
        );
        let absent = send(
            "GET",
            &url(&format!("/v2/alice/secret/{kind}/{missing}")),
            &as_bob,
            None,
        );
        assert_eq!(
            hidden.status,
            StatusCode::NOT_FOUND,
            "{}",
            hidden.describe()
        );
        assert_eq!(
            error_shape(&hidden, &[d]),
            error_shape(&absent, &[&missing]),
            "bob GET alice's {kind} {d} vs a missing digest"
        );
        // And what alice herself gets for a missing digest is the same again.
        let alices_miss = send(
            "GET",
            &url(&format!("/v2/alice/secret/{kind}/{missing}")),
            &Auth::Basic(&alice),
            None,
        );
        assert_eq!(
            error_shape(&alices_miss, &[&missing]),
            error_shape(&absent, &[&missing])
        );
        let head = send(
            "HEAD",
            &url(&format!("/v2/alice/secret/{kind}/{d}")),
            &as_bob,
            None,
        );
        let head_absent = send(
            "HEAD",
            &url(&format!("/v2/alice/secret/{kind}/{missing}")),
            &as_bob,
            None,
        );
        assert_eq!(
            (head.status, head.body.len()),
            (head_absent.status, head_absent.body.len())
        );
        // Through bob's own (empty) namespace: unknown too.
        let own = send(
            "GET",
            &url(&format!("/v2/bob/secret/{kind}/{d}")),
            &as_bob,
            None,
        );
        assert_eq!(own.status, StatusCode::NOT_FOUND, "{}", own.describe());
    }
    // The manifest by tag, the tag list and the referrers: like a repository that does not exist.
    let by_tag = send("GET", &url("/v2/alice/secret/manifests/1"), &as_bob, None);
    let no_repo = send("GET", &url("/v2/alice/nothing/manifests/1"), &as_bob, None);
    assert_eq!(
        error_shape(&by_tag, &["alice/secret"]),
        error_shape(&no_repo, &["alice/nothing"])
    );
    let tags = send("GET", &url("/v2/alice/secret/tags/list"), &as_bob, None);
    let no_tags = send("GET", &url("/v2/alice/nothing/tags/list"), &as_bob, None);
    assert_eq!(tags.status, StatusCode::NOT_FOUND);
    assert_eq!(
        error_shape(&tags, &["alice/secret"]),
        error_shape(&no_tags, &["alice/nothing"])
    );
    let refs = send(
        "GET",
        &url(&format!("/v2/alice/secret/referrers/{}", a.digest)),
        &as_bob,
        None,
    );
    let no_refs = send(
        "GET",
        &url(&format!("/v2/alice/nothing/referrers/{}", a.digest)),
        &as_bob,
        None,
    );
    assert_eq!(
        (refs.status, refs.body.clone()),
        (no_refs.status, no_refs.body.clone())
    );

    // The SIF routes, by digest and by name:tag.
    let sif = send("GET", &url(&format!("/sif/{}", a.digest)), &as_bob, None);
    let no_sif = send("GET", &url(&format!("/sif/{missing}")), &as_bob, None);
    assert_eq!(sif.status, StatusCode::NOT_FOUND, "{}", sif.describe());
    assert_eq!(
        error_shape(&sif, &[&a.digest]),
        error_shape(&no_sif, &[&missing])
    );
    let sif_tag = send("GET", &url("/sif/alice/secret:1/status"), &as_bob, None);
    let no_sif_tag = send("GET", &url("/sif/alice/nothing:1/status"), &as_bob, None);
    assert_eq!(
        error_shape(&sif_tag, &["alice/secret"]),
        error_shape(&no_sif_tag, &["alice/nothing"])
    );

    // Cross-repository mount from alice's repository: a plain 202 upload, as for a missing blob.
    let mount = |d: &str| {
        send(
            "POST",
            &url(&format!(
                "/v2/bob/stolen/blobs/uploads/?mount={d}&from=alice/secret"
            )),
            &as_bob,
            None,
        )
    };
    let (stolen, absent) = (mount(&a.layer_digest), mount(&missing));
    assert_eq!(stolen.status, StatusCode::ACCEPTED, "{}", stolen.describe());
    assert_eq!(absent.status, StatusCode::ACCEPTED);
    let after = send(
        "HEAD",
        &url(&format!("/v2/bob/stolen/blobs/{}", a.layer_digest)),
        &as_bob,
        None,
    );
    assert_eq!(
        after.status,
        StatusCode::NOT_FOUND,
        "the mount must not have happened"
    );
    // alice mounting from her own repository works (the control).
    let own = send(
        "POST",
        &url(&format!(
            "/v2/alice/copy/blobs/uploads/?mount={}&from=alice/secret",
            a.layer_digest
        )),
        &Auth::Basic(&alice),
        None,
    );
    assert_eq!(own.status, StatusCode::CREATED, "{}", own.describe());

    // Writes into alice's namespace: 403 DENIED naming where bob may push; deletes too.
    let push = send(
        "POST",
        &url("/v2/alice/secret/blobs/uploads/"),
        &as_bob,
        None,
    );
    assert_eq!(push.status, StatusCode::FORBIDDEN, "{}", push.describe());
    assert_eq!(push.error_codes(), vec!["DENIED"]);
    assert!(push.text().contains("bob/…"), "{}", push.text());
    let del = send(
        "DELETE",
        &url(&format!("/v2/alice/secret/manifests/{}", a.digest)),
        &as_bob,
        None,
    );
    assert_eq!(del.status, StatusCode::FORBIDDEN, "{}", del.describe());
    // alice still has everything.
    let mine = send(
        "GET",
        &url(&format!("/v2/alice/secret/manifests/{}", a.digest)),
        &Auth::Basic(&alice),
        None,
    );
    assert_eq!(mine.status, StatusCode::OK, "{}", mine.describe());
    assert_eq!(mine.body, a.manifest);

    // Anonymous callers are asked to log in, with the scope Docker needs.
    let anon = send(
        "GET",
        &url("/v2/alice/secret/manifests/1"),
        &Auth::None,
        None,
    );
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED);
    let challenge = anon.header("www-authenticate").unwrap_or_default();
    assert_eq!(
        challenge,
        format!(
            "Bearer realm=\"{}/token\",service=\"hpc-registry\",scope=\"repository:alice/secret:pull\"",
            server.base_url()
        )
    );
    // The token endpoint grants bob nothing on alice's repository, and pull,push on his own.
    let t = send(
        "GET",
        &url("/token?service=hpc-registry&scope=repository:alice/secret:pull,push&scope=repository:bob/x:pull,push"),
        &as_bob,
        None,
    );
    assert_eq!(t.status, StatusCode::OK, "{}", t.describe());
    let token = t.json()["token"].as_str().unwrap().to_owned();
    let claims = jwt_claims(&token);
    assert_eq!(claims["sub"], "bob");
    assert_eq!(claims["access"][0]["actions"], serde_json::json!([]));
    assert_eq!(
        claims["access"][1]["actions"],
        serde_json::json!(["pull", "push"])
    );
    let with_token = send(
        "GET",
        &url(&format!("/v2/alice/secret/manifests/{}", a.digest)),
        &Auth::Bearer(&token),
        None,
    );
    assert_eq!(
        with_token.status,
        StatusCode::NOT_FOUND,
        "{}",
        with_token.describe()
    );
    // A tampered token is refused.
    let mut forged = token.clone();
    forged.insert(forged.len() - 2, 'x');
    let r = send("GET", &url("/v2/"), &Auth::Bearer(&forged), None);
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[test]
fn group_members_share_a_namespace_and_others_are_refused() {
    let setup = Setup::new()
        .user("carol", &[])
        .user("dave", &[])
        .user("erin", &[])
        .user("fred", &[])
        .group("proj-x", &["carol", "dave"], &["fred"]);
    let server = Server::start_secure(&setup, &[]);
    let (carol, dave, erin, fred) = (
        Creds::of("carol"),
        Creds::of("dave"),
        Creds::of("erin"),
        Creds::of("fred"),
    );
    let first = push_as(&server, &carol, "proj-x/app", "1");
    // The other member reads it and pushes too; the read-only member reads only.
    for who in [&dave, &fred] {
        let r = send(
            "GET",
            &server.url("/v2/proj-x/app/manifests/1"),
            &Auth::Basic(who),
            None,
        );
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{} reading proj-x/app: {}",
            who.user,
            r.describe()
        );
        assert_eq!(r.body, first.manifest);
    }
    push_as(&server, &dave, "proj-x/app", "2");
    let r = send(
        "POST",
        &server.url("/v2/proj-x/app/blobs/uploads/"),
        &Auth::Basic(&fred),
        None,
    );
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "read-only member pushing: {}",
        r.describe()
    );
    // A non-member sees nothing and may not push.
    let r = send(
        "GET",
        &server.url("/v2/proj-x/app/manifests/1"),
        &Auth::Basic(&erin),
        None,
    );
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.describe());
    assert_eq!(r.error_codes(), vec!["MANIFEST_UNKNOWN"]);
    let r = send(
        "POST",
        &server.url("/v2/proj-x/app/blobs/uploads/"),
        &Auth::Basic(&erin),
        None,
    );
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.describe());
    assert!(r.text().contains("erin/…"), "{}", r.text());
    assert!(catalog(&server, &Auth::Basic(&erin)).is_empty());
    assert_eq!(catalog(&server, &Auth::Basic(&fred)), vec!["proj-x/app"]);
    let r = send(
        "GET",
        &server.url("/v2/proj-x/app/tags/list"),
        &Auth::Basic(&dave),
        None,
    );
    assert_eq!(
        user_tags(
            &r.json()["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        ),
        vec!["1", "2"]
    );
}

#[test]
fn munge_credentials_fetch_the_owners_manifest_and_sif() {
    ensure_munged();
    let alice_uid = ensure_host_user("alice");
    ensure_host_user("bob");
    // alice is a registry user mapped by uid; bob exists only on the host.
    let uid = alice_uid.to_string();
    let server = Server::start_secure(&Setup::new().user("alice", &["--uid", &uid]), &["--munge"]);
    let alice = Creds::of("alice");

    // alice pushes a runnable image with skopeo (token flow with her password).
    push_busybox_ok(
        &server,
        &alice,
        "alice/tool:1",
        &["/bin/sh", "-c", "echo from-munge"],
    );

    let manifest = server.url("/v2/alice/tool/manifests/1");
    let get = |url: &str, credential: &str| {
        Reply::from(
            http()
                .get(url)
                .header("accept", ACCEPT_ALL_MANIFESTS)
                .header("authorization", format!("MUNGE {credential}"))
                .send()
                .expect("GET with MUNGE"),
        )
    };
    let credential = munge_credential("alice");
    let r = get(&manifest, &credential);
    assert_eq!(
        r.status,
        StatusCode::OK,
        "alice's MUNGE credential: {}",
        r.describe()
    );
    // munged refuses a credential it has seen: so does the registry.
    let replay = get(&manifest, &credential);
    assert_eq!(
        replay.status,
        StatusCode::UNAUTHORIZED,
        "replayed credential: {}",
        replay.describe()
    );
    assert!(replay.text().contains("replayed"), "{}", replay.text());
    // bob's credential authenticates bob, who may not read alice's image.
    let r = get(&manifest, &munge_credential("bob"));
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "bob's MUNGE credential: {}",
        r.describe()
    );
    let r = send(
        "GET",
        &server.url("/v2/_catalog"),
        &Auth::Munge(&munge_credential("bob")),
        None,
    );
    assert_eq!(r.json()["repositories"], serde_json::json!([]));
    // MUNGE is for pulls only.
    let r = send(
        "POST",
        &server.url("/v2/alice/tool/blobs/uploads/"),
        &Auth::Munge(&munge_credential("alice")),
        None,
    );
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.describe());
    // Garbage is refused without reaching munged's happy path.
    let r = get(&manifest, "MUNGE:not-a-credential:");
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // The SIF, as a batch job would fetch it: a fresh credential per request.
    let sif = server.url("/sif/alice/tool:1");
    let until = Instant::now() + BUILD_DEADLINE;
    let (body, image) = loop {
        let r = get(&sif, &munge_credential("alice"));
        match r.status {
            StatusCode::OK => break (r.body.clone(), r.header("x-image-digest")),
            StatusCode::ACCEPTED => {}
            _ => panic!("GET /sif/alice/tool:1 with MUNGE: {}", r.describe()),
        }
        assert!(Instant::now() < until, "no SIF after {BUILD_DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        body.windows(9).take(128).any(|w| w == b"SIF_MAGIC"),
        "not a SIF ({} bytes)",
        body.len()
    );
    let r = get(&sif, &munge_credential("bob"));
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "bob fetching alice's SIF: {}",
        r.describe()
    );
    // By digest, after alice's fetches made the resolution a cached one: still hers alone.
    let image = image.expect("the SIF response names its image digest");
    let by_digest = server.url(&format!("/sif/{image}"));
    let r = get(&by_digest, &munge_credential("alice"));
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
    assert_eq!(r.body, body);
    let r = get(&by_digest, &munge_credential("bob"));
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "bob fetching alice's SIF by digest: {}",
        r.describe()
    );
}

#[test]
fn brute_force_logins_are_rate_limited() {
    let server = Server::start_secure(&Setup::new().user("alice", &[]), &[]);
    let wrong = Creds::new("alice", "guess");
    // The default limit: 10 failed passwords per user name and client address in 5 minutes.
    for i in 0..10 {
        let r = send("GET", &server.url("/v2/"), &Auth::Basic(&wrong), None);
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "attempt {i}: {}",
            r.describe()
        );
    }
    let r = send("GET", &server.url("/v2/"), &Auth::Basic(&wrong), None);
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.describe());
    assert_eq!(r.error_codes(), vec!["TOOMANYREQUESTS"]);
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without a numeric Retry-After: {}", r.describe()));
    assert!((1..=300).contains(&retry), "Retry-After {retry}");
    // Even the right password waits now, on /v2 and on /token.
    let right = Creds::of("alice");
    let r = send("GET", &server.url("/v2/"), &Auth::Basic(&right), None);
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let r = send(
        "GET",
        &server.url("/token?service=hpc-registry"),
        &Auth::Basic(&right),
        None,
    );
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    // The failures are on record (the server log), without the password tried.
    let log = server.log();
    assert!(
        log.matches("authentication failed").count() >= 10,
        "failed logins not recorded:\n{log}"
    );
    assert!(!log.contains("guess"), "a tried password reached the log");
}

#[test]
fn skopeo_pushes_over_tls_with_a_test_ca() {
    let ca = TestCa::new();
    let args = ca.server_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let setup = Setup::new().user("alice", &[]).user("boss", &["--admin"]);
    let server = Server::start_secure(&setup, &args);
    let alice = Creds::of("alice");
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("oci");
    busybox_oci_layout(&layout, "1", &["/bin/sh"]);
    let certs = ca.path("certs.d").display().to_string();
    let dest = format!("docker://{}/alice/secure:1", server.host());
    let creds = format!("alice:{}", alice.secret);
    run(skopeo().args([
        "copy",
        "--dest-cert-dir",
        &certs,
        "--dest-creds",
        &creds,
        &format!("oci:{}:1", layout.display()),
        &dest,
    ]));
    let inspect = run(skopeo().args(["inspect", "--cert-dir", &certs, "--creds", &creds, &dest]));
    assert!(inspect.contains("\"Architecture\": \"amd64\""), "{inspect}");
    // Without the CA, verification fails.
    let out = run_output(skopeo().args(["inspect", "--creds", &creds, &dest]));
    assert!(
        !out.status.success(),
        "skopeo trusted an unknown CA:\n{}",
        text(&out)
    );
    // Plain HTTP on the TLS port gets nowhere.
    let plain = http().get(server.url("/v2/")).send();
    assert!(
        plain
            .as_ref()
            .map(|r| r.status() != StatusCode::OK)
            .unwrap_or(true),
        "plain HTTP answered 200 on the TLS port"
    );
    // The admin CLI talks HTTPS with the CA.
    let ca_file = ca.path("ca.crt").display().to_string();
    let url = server.https_url("");
    let env = [
        ("HPC_REGISTRY_USER", "boss"),
        ("HPC_REGISTRY_PASSWORD", "boss-password"),
    ];
    let users = cli(
        &["user", "list", "--server", &url, "--cacert", &ca_file],
        &env,
        "",
    );
    assert!(users.contains("alice") && users.contains("boss"), "{users}");
}

#[test]
fn first_start_admin_offline_cli_lock_and_admin_api() {
    // No users at all: an admin with a one-time password, in a 0600 file of the data directory;
    // stderr (journald keeps it) says where, in a marked block, never the password.
    let mut server = Server::start_secure(&Setup::new(), &[]);
    let log = server.log();
    let file = server.data_dir().join("initial-admin-password");
    let password = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("no first-start password in {}: {e}\n{log}", file.display()))
        .trim()
        .to_owned();
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} is {mode:o}", file.display());
    assert!(log.contains("first start"), "{log}");
    assert!(log.contains(&file.display().to_string()), "{log}");
    let admin = Creds::new("admin", &password);
    let r = send("GET", &server.url("/v2/"), &Auth::Basic(&admin), None);
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
    // Neither on stderr nor in a tracing line.
    assert_eq!(log.matches(password.as_str()).count(), 0, "{log}");

    // The offline CLI refuses while the server holds the data directory, and says what to do.
    let dd = server.data_dir().display().to_string();
    let out = cli_output(&["user", "list", "--data-dir", &dd], &[], "");
    assert!(!out.status.success(), "offline CLI ran beside a server");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("--server {}", server.base_url())),
        "{err}"
    );

    // The admin API, through the CLI.
    let base = server.base_url();
    let as_admin = [
        ("HPC_REGISTRY_SERVER", base.as_str()),
        ("HPC_REGISTRY_USER", "admin"),
        ("HPC_REGISTRY_PASSWORD", password.as_str()),
    ];
    cli(
        &["user", "add", "carol", "--password-stdin"],
        &as_admin,
        "carol-password\n",
    );
    cli(
        &["user", "add", "dave", "--no-password", "--uid", "4242"],
        &as_admin,
        "",
    );
    cli(&["group", "add", "proj-y"], &as_admin, "");
    let members = cli(
        &[
            "group",
            "members",
            "proj-y",
            "--add",
            "carol",
            "--add-read-only",
            "dave",
        ],
        &as_admin,
        "",
    );
    assert!(
        members.contains("carol") && members.contains("read-only"),
        "{members}"
    );
    let users = cli(&["user", "list", "--json"], &as_admin, "");
    let users: Value = serde_json::from_str(&users).unwrap();
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["admin", "carol", "dave"]);
    assert_eq!(users[2]["uid"], 4242);
    assert_eq!(users[2]["password"], false);
    // A group and a user cannot share a name (they share the namespace).
    let out = cli_output(&["group", "add", "carol"], &as_admin, "");
    assert!(!out.status.success());

    // A plain user may not administer, but changes their own password and tokens.
    let as_carol = [
        ("HPC_REGISTRY_SERVER", base.as_str()),
        ("HPC_REGISTRY_USER", "carol"),
        ("HPC_REGISTRY_PASSWORD", "carol-password"),
    ];
    let out = cli_output(&["user", "list"], &as_carol, "");
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("403"),
        "{}",
        text(&out)
    );
    cli(
        &["user", "passwd", "carol", "--password-stdin"],
        &as_carol,
        "carol-new-password\n",
    );
    let r = send(
        "GET",
        &server.url("/v2/"),
        &Auth::Basic(&Creds::new("carol", "carol-new-password")),
        None,
    );
    assert_eq!(r.status, StatusCode::OK);
    let as_carol = [
        ("HPC_REGISTRY_SERVER", base.as_str()),
        ("HPC_REGISTRY_USER", "carol"),
        ("HPC_REGISTRY_PASSWORD", "carol-new-password"),
    ];
    let token = cli(&["token", "create", "--expires-days", "1"], &as_carol, "");
    let token = token.trim().to_owned();
    // The token works as Basic password and as a Bearer header (curl in batch jobs).
    for auth in [
        Auth::Basic(&Creds::new("carol", &token)),
        Auth::Bearer(&token),
    ] {
        let r = send("GET", &server.url("/v2/_catalog"), &auth, None);
        assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
    }
    let list: Value =
        serde_json::from_str(&cli(&["token", "list", "--json"], &as_carol, "")).unwrap();
    let id = list[0]["id"].as_str().unwrap().to_owned();
    assert!(
        list[0]["last_used_at"].is_i64(),
        "last use not recorded: {list}"
    );
    cli(&["token", "revoke", &id], &as_carol, "");
    let r = send("GET", &server.url("/v2/"), &Auth::Bearer(&token), None);
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "revoked token still works"
    );

    // After a restart the password is still never printed, and the offline CLI works once stopped.
    server.restart_secure();
    assert_eq!(server.log().matches(password.as_str()).count(), 0);
    server.terminate();
    let out = cli(&["user", "del", "dave", "--data-dir", &dd], &[], "");
    assert!(out.is_empty());
    let users = cli(&["user", "list", "--data-dir", &dd], &[], "");
    assert!(
        !users.contains("dave") && users.contains("carol"),
        "{users}"
    );
}

/// Working memory of one argon2id verification with the parameters the registry uses (19 MiB).
const ARGON2_KIB: u64 = 19 * 1024;

#[test]
fn a_login_storm_costs_the_hashing_pool_not_one_argon2_per_login() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    // Every login pays argon2 (no remembered passwords), two at a time.
    std::fs::write(
        &config,
        "[auth]\npassword_hashing_threads = 2\ncredential_cache_secs = 0\n",
    )
    .unwrap();
    let server = Server::start_secure(&alice_and_bob(), &["--config", config.to_str().unwrap()]);
    let url = server.url("/token?service=hpc-registry&scope=repository:alice/x:pull");
    let login = |creds: &Creds| send("GET", &url, &Auth::Basic(creds), None);
    // One login first, so that the baseline includes what any first login sets up.
    let r = login(&Creds::of("alice"));
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
    let baseline = server.rss_kib();
    let storm: Vec<_> = (0..64)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let creds = Creds::of(if i % 2 == 0 { "alice" } else { "bob" });
                send("GET", &url, &Auth::Basic(&creds), None)
            })
        })
        .collect();
    for (i, t) in storm.into_iter().enumerate() {
        let r = t.join().expect("login thread");
        assert_eq!(r.status, StatusCode::OK, "login {i}: {}", r.describe());
        assert!(r.json()["token"].as_str().is_some_and(|t| !t.is_empty()));
    }
    // Two verifications' memory at most, plus room for 64 connections' buffers and threads;
    // 64 unbounded verifications would need 1.2 GiB, and one 19 MiB copy kept per blocking
    // thread (the allocator's arenas) ended far above this too.
    let peak = server.peak_rss_kib();
    let bound = baseline + 2 * ARGON2_KIB + 16 * 1024;
    assert!(
        peak <= bound,
        "peak RSS {peak} KiB after 64 concurrent logins, bound {bound} KiB (baseline {baseline} KiB)"
    );
    // And the working memory goes back once the storm is over.
    let anon = server.anon_rss_kib();
    assert!(
        anon < baseline + ARGON2_KIB,
        "RssAnon {anon} KiB after the storm (baseline RSS {baseline} KiB)"
    );
}

#[test]
fn remembered_basic_passwords_fail_at_once_when_changed_wrong_or_the_user_is_gone() {
    let setup = alice_and_bob().user("root", &["--admin"]);
    let server = Server::start_secure(&setup, &[]);
    let v2 = server.url("/v2/");
    let get = |creds: &Creds| send("GET", &v2, &Auth::Basic(creds), None).status;
    let (alice, bob) = (Creds::of("alice"), Creds::of("bob"));
    // Verified once, then remembered (default 60 s).
    assert_eq!(get(&alice), StatusCode::OK);
    assert_eq!(get(&alice), StatusCode::OK);
    // A wrong password is never taken for a remembered one.
    assert_eq!(
        get(&Creds::new("alice", "alice-passwor")),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&Creds::new("alice", "alice-password ")),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&Creds::new("bob", "alice-password")),
        StatusCode::UNAUTHORIZED
    );

    // alice changes her password through the admin API: the old one fails on the next request.
    let r = send(
        "PUT",
        &server.url("/admin/users/alice/password"),
        &Auth::Basic(&alice),
        Some((
            "application/json",
            br#"{"password": "a new long password"}"#.to_vec(),
        )),
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
    assert_eq!(get(&alice), StatusCode::UNAUTHORIZED);
    let renewed = Creds::new("alice", "a new long password");
    assert_eq!(get(&renewed), StatusCode::OK);
    assert_eq!(get(&renewed), StatusCode::OK);

    // bob is remembered, then deleted by the admin: his password fails at once.
    assert_eq!(get(&bob), StatusCode::OK);
    let r = send(
        "DELETE",
        &server.url("/admin/users/bob"),
        &Auth::Basic(&Creds::of("root")),
        None,
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
    assert_eq!(get(&bob), StatusCode::UNAUTHORIZED);
}
