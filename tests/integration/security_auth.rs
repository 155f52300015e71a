//! Issue 9, authentication and authorization: the outside probe's escalations as regression tests,
//! written against the rules rather than the probe's exact requests.
//!
//! * a derived credential never exceeds its source (`/token` with a bearer token: the same or
//!   fewer actions, the read-only mark kept, no later expiry, dead with its access token);
//! * a read-only credential changes nothing, on `/v2` and on every `/admin` route;
//! * MUNGE maps a uid to a registry user only by an explicit uid (names only when the site says
//!   so, and never to admin rights), and a host account named like a registry group gets nothing;
//! * a host group named like a user is never a group namespace;
//! * bad passwords from one client lock out neither the user's tokens nor the user elsewhere.
//!
//! Every server runs WITHOUT `--dev`; users are made with the real CLI, MUNGE credentials by the
//! real munged, host accounts and groups with useradd/groupadd.

use std::net::IpAddr;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::users::*;
use crate::support::*;

/// `GET /token` for `scopes` with `auth`; the token and its claims (asserts 200).
fn token_at(server: &Server, auth: &Auth, scopes: &[&str]) -> (String, Value) {
    let r = token_reply(server, auth, scopes);
    assert_eq!(
        r.status,
        StatusCode::OK,
        "/token {scopes:?}: {}",
        r.describe()
    );
    let token = r.json()["token"].as_str().expect("token").to_owned();
    let mut claims = jwt_claims(&token);
    claims["expires_in"] = r.json()["expires_in"].clone();
    (token, claims)
}

fn token_reply(server: &Server, auth: &Auth, scopes: &[&str]) -> Reply {
    let mut url = server.url("/token?service=hpc-registry");
    for s in scopes {
        url.push_str("&scope=");
        url.push_str(s);
    }
    send("GET", &url, auth, None)
}

/// The actions a token's claims grant on `kind:name` (empty when listed without actions or absent).
fn granted(claims: &Value, kind: &str, name: &str) -> Vec<String> {
    let mut out: Vec<String> = claims["access"]
        .as_array()
        .expect("access")
        .iter()
        .filter(|g| g["type"] == kind && g["name"] == name)
        .flat_map(|g| g["actions"].as_array().cloned().unwrap_or_default())
        .map(|a| a.as_str().unwrap_or_default().to_owned())
        .collect();
    out.sort();
    out
}

/// An access token of `creds`'s user (`scope`: `read` or `read-write`): (secret, id).
fn access_token(server: &Server, creds: &Creds, scope: &str) -> (String, String) {
    let body = serde_json::to_vec(&json!({"scope": scope, "description": "probe"})).unwrap();
    let r = send(
        "POST",
        &server.url("/admin/tokens"),
        &Auth::Basic(creds),
        Some(("application/json", body)),
    );
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "token create: {}",
        r.describe()
    );
    let v = r.json();
    (
        v["token"].as_str().expect("token").to_owned(),
        v["id"].as_str().expect("id").to_owned(),
    )
}

/// A request body for [`send`]: content type and bytes.
type Body = Option<(&'static str, Vec<u8>)>;

fn start_upload_status(server: &Server, repo: &str, auth: &Auth) -> Reply {
    send(
        "POST",
        &server.url(&format!("/v2/{repo}/blobs/uploads/")),
        auth,
        None,
    )
}

fn manifest_status(server: &Server, repo: &str, reference: &str, auth: &Auth) -> StatusCode {
    Reply::from(
        with_auth(
            http().get(server.url(&format!("/v2/{repo}/manifests/{reference}"))),
            auth,
        )
        .header("accept", ACCEPT_ALL_MANIFESTS)
        .send()
        .expect("GET manifest"),
    )
    .status
}

/// alice with a private image, bob with `bob/x`, an admin; all with passwords.
fn three_users() -> (Server, Pushed) {
    let setup = Setup::new()
        .user("alice", &[])
        .user("bob", &[])
        .user("admin", &["--admin"]);
    let server = Server::start_secure(&setup, &[]);
    let private = push_as(&server, &Creds::of("alice"), "alice/private", "1");
    push_as(&server, &Creds::of("bob"), "bob/x", "1");
    (server, private)
}

const SCOPE_X: &str = "repository:bob/x:pull,push";

#[test]
fn a_read_only_mark_survives_every_derivation() {
    let (server, _) = three_users();
    // The probe's chain: a read-only access token, then bearer after bearer. Every link stays
    // pull-only and read-only, so the last cannot push.
    let (bob_ro, _) = access_token(&server, &Creds::of("bob"), "read");
    let (mut token, claims) = token_at(
        &server,
        &Auth::Basic(&Creds::new("bob", &bob_ro)),
        &[SCOPE_X],
    );
    assert_eq!(granted(&claims, "repository", "bob/x"), vec!["pull"]);
    assert_eq!(claims["amr"], "token-read", "{claims}");
    for step in 2..=4 {
        let (next, claims) = token_at(&server, &Auth::Bearer(&token), &[SCOPE_X]);
        assert_eq!(
            granted(&claims, "repository", "bob/x"),
            vec!["pull"],
            "derivation {step}: {claims}"
        );
        assert_eq!(claims["amr"], "token-read", "derivation {step}: {claims}");
        assert_eq!(claims["ro"], true, "derivation {step}: {claims}");
        token = next;
    }
    let r = start_upload_status(&server, "bob/x", &Auth::Bearer(&token));
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.describe());
    assert_eq!(
        manifest_status(&server, "bob/x", "1", &Auth::Bearer(&token)),
        StatusCode::OK
    );
}

#[test]
fn a_derived_token_carries_at_most_its_sources_actions() {
    let (server, _) = three_users();
    let bob = Creds::of("bob");
    // A pull-only token derives pull-only tokens, whatever they ask for ...
    let (pull_only, _) = token_at(&server, &Auth::Basic(&bob), &["repository:bob/x:pull"]);
    let (wider, claims) = token_at(
        &server,
        &Auth::Bearer(&pull_only),
        &["repository:bob/x:pull,push,delete"],
    );
    assert_eq!(
        granted(&claims, "repository", "bob/x"),
        vec!["pull"],
        "{claims}"
    );
    assert_eq!(claims["amr"], "password", "{claims}");
    let r = start_upload_status(&server, "bob/x", &Auth::Bearer(&wider));
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.describe());
    // ... and a token narrowed to one repository is not widened to another, nor to the catalog.
    let (narrow, _) = token_at(&server, &Auth::Basic(&bob), &[SCOPE_X]);
    let (_, claims) = token_at(
        &server,
        &Auth::Bearer(&narrow),
        &["repository:bob/y:pull,push", "registry:catalog:*"],
    );
    assert!(
        granted(&claims, "repository", "bob/y").is_empty(),
        "{claims}"
    );
    assert!(
        granted(&claims, "registry", "catalog").is_empty(),
        "{claims}"
    );
    // What the source holds is still handed on.
    let (_, claims) = token_at(&server, &Auth::Bearer(&narrow), &[SCOPE_X]);
    assert_eq!(
        granted(&claims, "repository", "bob/x"),
        vec!["pull", "push"]
    );
}

#[test]
fn a_derived_token_never_expires_later_than_its_source() {
    let (server, _) = three_users();
    let (source_token, source) = token_at(
        &server,
        &Auth::Basic(&Creds::of("bob")),
        &["repository:bob/x:pull"],
    );
    // A second later, a fresh token would expire a second later: the derived one may not.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (_, later) = token_at(
        &server,
        &Auth::Bearer(&source_token),
        &["repository:bob/x:pull"],
    );
    let source_exp = source["exp"].as_i64().unwrap();
    let exp = later["exp"].as_i64().unwrap();
    assert!(
        exp <= source_exp,
        "derived exp {exp} > source exp {source_exp}"
    );
    let expires_in = later["expires_in"].as_i64().unwrap();
    assert!(
        later["iat"].as_i64().unwrap() + expires_in <= source_exp,
        "expires_in {expires_in} reaches past the source: {later}"
    );
}

#[test]
fn tokens_derived_from_an_access_token_die_with_it() {
    let (server, _) = three_users();
    let bob = Creds::of("bob");
    let (bob_rw, id) = access_token(&server, &bob, "read-write");
    let (first, claims) = token_at(
        &server,
        &Auth::Basic(&Creds::new("bob", &bob_rw)),
        &[SCOPE_X],
    );
    assert_eq!(
        granted(&claims, "repository", "bob/x"),
        vec!["pull", "push"]
    );
    let (second, claims) = token_at(&server, &Auth::Bearer(&first), &[SCOPE_X]);
    assert_eq!(
        granted(&claims, "repository", "bob/x"),
        vec!["pull", "push"]
    );
    for t in [&first, &second] {
        assert_eq!(
            manifest_status(&server, "bob/x", "1", &Auth::Bearer(t)),
            StatusCode::OK
        );
    }
    let r = send(
        "DELETE",
        &server.url(&format!("/admin/tokens/{id}")),
        &Auth::Basic(&bob),
        None,
    );
    assert_eq!(r.status, StatusCode::OK, "revoke: {}", r.describe());
    for t in [&first, &second] {
        let r = send("GET", &server.url("/v2/"), &Auth::Bearer(t), None);
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "revoked source: {}",
            r.describe()
        );
        let r = token_reply(&server, &Auth::Bearer(t), &[SCOPE_X]);
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "revoked source: {}",
            r.describe()
        );
    } // The link is in the token (the access token's id, never its secret).
    assert_eq!(jwt_claims(&second)["pat"], id.as_str());
}

#[test]
fn a_read_only_admin_token_cannot_push_or_delete_through_derivation() {
    let (server, private) = three_users();
    let (admin_ro, _) = access_token(&server, &Creds::of("admin"), "read");
    let everything = "repository:alice/private:pull,push,delete";
    let (mut token, claims) = token_at(
        &server,
        &Auth::Basic(&Creds::new("admin", &admin_ro)),
        &[everything],
    );
    assert_eq!(
        granted(&claims, "repository", "alice/private"),
        vec!["pull"]
    );
    for step in 2..=4 {
        let (next, claims) = token_at(&server, &Auth::Bearer(&token), &[everything]);
        assert_eq!(
            granted(&claims, "repository", "alice/private"),
            vec!["pull"],
            "derivation {step}: {claims}"
        );
        token = next;
    }
    let r = send(
        "DELETE",
        &server.url(&format!("/v2/alice/private/manifests/{}", private.digest)),
        &Auth::Bearer(&token),
        None,
    );
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.describe());
    let r = start_upload_status(&server, "alice/private", &Auth::Bearer(&token));
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.describe());
    assert_eq!(
        manifest_status(
            &server,
            "alice/private",
            "1",
            &Auth::Basic(&Creds::of("alice"))
        ),
        StatusCode::OK,
        "alice's image is gone"
    );
    assert_eq!(
        manifest_status(&server, "alice/private", "1", &Auth::Bearer(&token)),
        StatusCode::OK,
        "the derived token lost the pull it should keep"
    );
}

#[test]
fn read_only_credentials_change_nothing() {
    let setup = Setup::new()
        .user("alice", &[])
        .user("bob", &[])
        .user("carol", &[])
        .user("admin", &["--admin"])
        .group("proj", &["carol"], &[]);
    let server = Server::start_secure(&setup, &[]);
    let (alice, bob, admin) = (Creds::of("alice"), Creds::of("bob"), Creds::of("admin"));
    let private = push_as(&server, &alice, "alice/private", "1");
    let bobs = push_as(&server, &bob, "bob/x", "1");
    let (admin_ro, admin_ro_id) = access_token(&server, &admin, "read");
    let (bob_ro, _) = access_token(&server, &bob, "read");
    let admin_basic = Creds::new("admin", &admin_ro);
    let as_admin_ro = Auth::Basic(&admin_basic);

    // Reads still work: the refusals below are about writing, not about logging in.
    let r = send("GET", &server.url("/admin/usage"), &as_admin_ro, None);
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());

    let body = |v: Value| -> Body { Some(("application/json", serde_json::to_vec(&v).unwrap())) };
    let writes: Vec<(&str, String, Body)> = vec![
        ("DELETE", "/admin/repositories/alice/private".into(), None),
        ("POST", "/admin/prune".into(), None),
        ("POST", "/admin/prune?dry_run=true".into(), None),
        (
            "POST",
            "/admin/users".into(),
            body(json!({"name": "evil", "admin": true, "password": "evil-password-1234"})),
        ),
        ("DELETE", "/admin/users/alice".into(), None),
        (
            "PUT",
            "/admin/users/alice/password".into(),
            body(json!({"password": "taken-over-1234"})),
        ),
        (
            "POST",
            "/admin/users/import-htpasswd".into(),
            body(
                json!({"content": "evil2:$2y$05$abcdefghijklmnopqrstuu5Ah0xLqfWkNv1LfBCNgfxM6fXbPmmSa\n"}),
            ),
        ),
        (
            "POST",
            "/admin/groups".into(),
            body(json!({"name": "evilgroup"})),
        ),
        ("DELETE", "/admin/groups/proj".into(), None),
        (
            "PUT",
            "/admin/groups/proj/members/bob".into(),
            body(json!({"read_only": false})),
        ),
        ("DELETE", "/admin/groups/proj/members/carol".into(), None),
        // Laundering through the admin API: a read-write token made with a read-only one.
        (
            "POST",
            "/admin/tokens".into(),
            body(json!({"scope": "read-write"})),
        ),
        ("DELETE", format!("/admin/tokens/{admin_ro_id}"), None),
        (
            "PUT",
            "/admin/quotas/alice".into(),
            body(json!({"limit": "1KiB"})),
        ),
        ("DELETE", "/admin/quotas/alice".into(), None),
        ("POST", "/admin/scrub".into(), None),
    ];
    for (method, path, payload) in writes {
        let r = send(method, &server.url(&path), &as_admin_ro, payload);
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{method} {path} with a read-only admin token: {}",
            r.describe()
        );
        assert!(
            r.text().contains("read-only"),
            "{method} {path}: {}",
            r.text()
        );
    }
    // A user's own read-only token cannot mint a read-write one or change the password either.
    let bob_basic = Creds::new("bob", &bob_ro);
    for auth in [Auth::Basic(&bob_basic), Auth::Bearer(&bob_ro)] {
        let r = send(
            "POST",
            &server.url("/admin/tokens"),
            &auth,
            body(json!({"scope": "read-write"})),
        );
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.describe());
        let r = send(
            "PUT",
            &server.url("/admin/users/bob/password"),
            &auth,
            body(json!({"password": "changed-by-token-1234"})),
        );
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.describe());
    }

    // Nothing changed.
    assert_eq!(
        manifest_status(&server, "alice/private", "1", &Auth::Basic(&alice)),
        StatusCode::OK
    );
    let users = send(
        "GET",
        &server.url("/admin/users"),
        &Auth::Basic(&admin),
        None,
    )
    .json();
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["admin", "alice", "bob", "carol"], "{users}");
    let members = send(
        "GET",
        &server.url("/admin/groups/proj/members"),
        &Auth::Basic(&admin),
        None,
    );
    assert!(
        members.text().contains("carol") && !members.text().contains("bob"),
        "{}",
        members.text()
    );
    let tokens = send(
        "GET",
        &server.url("/admin/tokens?user=admin"),
        &Auth::Basic(&admin),
        None,
    )
    .json();
    assert_eq!(tokens.as_array().map(Vec::len), Some(1), "{tokens}");
    let r = send(
        "GET",
        &server.url("/v2/"),
        &Auth::Basic(&Creds::of("bob")),
        None,
    );
    assert_eq!(r.status, StatusCode::OK, "bob's password was changed");

    // /v2 writes, with the read-only tokens as Basic passwords and as Bearer headers.
    let layer = random_bytes(64);
    for auth in [Auth::Basic(&bob_basic), Auth::Bearer(&bob_ro)] {
        let r = start_upload_status(&server, "bob/x", &auth);
        assert_eq!(r.status, StatusCode::FORBIDDEN, "upload: {}", r.describe());
        let r = send(
            "PUT",
            &server.url("/v2/bob/x/manifests/2"),
            &auth,
            Some((OCI_MANIFEST, bobs.manifest.clone())),
        );
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "manifest PUT: {}",
            r.describe()
        );
        let r = send(
            "DELETE",
            &server.url(&format!("/v2/bob/x/manifests/{}", bobs.digest)),
            &auth,
            None,
        );
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "manifest DELETE: {}",
            r.describe()
        );
        let r = send(
            "DELETE",
            &server.url(&format!("/v2/bob/x/blobs/{}", bobs.layer_digest)),
            &auth,
            None,
        );
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "blob DELETE: {}",
            r.describe()
        );
        let r = send(
            "POST",
            &server.url(&format!(
                "/v2/bob/x/blobs/uploads/?digest={}",
                sha256_digest(&layer)
            )),
            &auth,
            Some(("application/octet-stream", layer.clone())),
        );
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "monolithic upload: {}",
            r.describe()
        );
    }
    for auth in [Auth::Basic(&admin_basic), Auth::Bearer(&admin_ro)] {
        let r = send(
            "DELETE",
            &server.url(&format!("/v2/alice/private/manifests/{}", private.digest)),
            &auth,
            None,
        );
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.describe());
        let r = start_upload_status(&server, "alice/private", &auth);
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.describe());
    }
    assert_eq!(
        manifest_status(&server, "bob/x", "1", &Auth::Basic(&bob)),
        StatusCode::OK
    );
}

fn munge_get(server: &Server, path: &str, host_user: &str) -> Reply {
    Reply::from(
        http()
            .get(server.url(path))
            .header("accept", ACCEPT_ALL_MANIFESTS)
            .header(
                "authorization",
                format!("MUNGE {}", munge_credential(host_user)),
            )
            .send()
            .expect("GET with MUNGE"),
    )
}

#[test]
fn munge_yields_admin_rights_only_through_an_explicit_uid() {
    ensure_munged();
    // The probe: a host account named `admin`, like the registry's first-start admin (no uid).
    ensure_host_user("admin");
    let alice_uid = ensure_host_user("mgalice").to_string();
    let boss_uid = ensure_host_user("mgboss").to_string();
    // A host account named like a registry group, with no registry user of its own.
    ensure_host_user("mgproj");
    let setup = Setup::new()
        .user("admin", &["--admin"])
        .user("mgalice", &["--uid", &alice_uid])
        .user("mgboss", &["--admin", "--uid", &boss_uid])
        .group("mgproj", &["mgalice"], &[]);
    let config_dir = tempfile::tempdir().unwrap();
    let matching = config_dir.path().join("match-names.toml");
    std::fs::write(
        &matching,
        "[auth]\nmunge = true\nmunge_match_names = true\n",
    )
    .unwrap();

    let mut server = Server::start_secure(&setup, &["--munge"]);
    let alice = Creds::of("mgalice");
    push_as(&server, &alice, "mgalice/private", "1");
    push_as(&server, &alice, "mgproj/shared", "1");
    let catalog = "/v2/_catalog";
    let manifest = "/v2/mgalice/private/manifests/1";

    // Default: the name alone claims nobody.
    let r = munge_get(&server, catalog, "admin");
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.describe());
    assert!(r.text().contains("munge_match_names"), "{}", r.text());
    let r = munge_get(&server, manifest, "admin");
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.describe());
    // A host account named like a group does not read the group's namespace.
    let r = munge_get(&server, "/v2/mgproj/shared/manifests/1", "mgproj");
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.describe());
    // An admin given that uid explicitly is the admin, and the uid-mapped user is herself.
    let r = munge_get(&server, manifest, "mgboss");
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
    let r = munge_get(&server, "/v2/mgproj/shared/manifests/1", "mgalice");
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());

    // Names matched (the site's choice): host `admin` is registry user `admin`, without admin rights.
    server.restart_secure_with(&["--config", matching.to_str().unwrap()]);
    let r = munge_get(&server, catalog, "admin");
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
    assert_eq!(r.json()["repositories"], json!([]), "{}", r.text());
    let r = munge_get(&server, manifest, "admin");
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.describe());
    let r = munge_get(&server, manifest, "mgboss");
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
}

#[test]
fn host_groups_named_like_users_are_not_namespaces() {
    // pgvic's user-private group `pgvic` has an extra member, pgmal; a host group `pgreg` is
    // named like a registry user that has no host account.
    ensure_host_user("pgvic");
    ensure_host_user("pgmal");
    ensure_host_group("pgvic", &["pgmal"]);
    ensure_host_group("pgreg", &["pgmal"]);
    ensure_host_group("pgteam", &["pgmal", "pgvic"]);
    let setup = Setup::new()
        .user("pgvic", &[])
        .user("pgmal", &[])
        .user("pgreg", &[]);
    let server = Server::start_secure(&setup, &["--posix-groups"]);
    let mal = Creds::of("pgmal");
    push_as(&server, &Creds::of("pgvic"), "pgvic/secret", "1");
    push_as(&server, &Creds::of("pgreg"), "pgreg/secret", "1");
    for victim in ["pgvic", "pgreg"] {
        let repo = format!("{victim}/secret");
        assert_eq!(
            manifest_status(&server, &repo, "1", &Auth::Basic(&mal)),
            StatusCode::NOT_FOUND,
            "pgmal reads {repo}"
        );
        let r = start_upload_status(&server, &repo, &Auth::Basic(&mal));
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "pgmal pushes to {repo}: {}",
            r.describe()
        );
        let (_, claims) = token_at(
            &server,
            &Auth::Basic(&mal),
            &[&format!("repository:{repo}:pull,push")],
        );
        assert!(granted(&claims, "repository", &repo).is_empty(), "{claims}");
    }
    // A host group that is nobody's name still is a shared namespace.
    push_as(&server, &Creds::of("pgvic"), "pgteam/tool", "1");
    assert_eq!(
        manifest_status(&server, "pgteam/tool", "1", &Auth::Basic(&mal)),
        StatusCode::OK
    );
}

#[test]
fn bad_passwords_from_one_client_lock_out_neither_tokens_nor_other_clients() {
    let setup = Setup::new().user("admin", &["--admin"]);
    let server = Server::start_secure(&setup, &[]);
    let admin = Creds::of("admin");
    let (token, _) = access_token(&server, &admin, "read-write");
    let at = |source: &str, auth: &Auth, path: &str| {
        let source: IpAddr = source.parse().unwrap();
        Reply::from(
            with_auth(http_from(source).get(server.url(path)), auth)
                .send()
                .expect("GET"),
        )
    };
    // The attacker, at 127.0.0.1, guesses admin's password until the limiter answers 429.
    let wrong = Creds::new("admin", "guess-1234");
    let mut limited = 0;
    for _ in 0..12 {
        let r = at("127.0.0.1", &Auth::Basic(&wrong), "/v2/");
        assert_ne!(r.status, StatusCode::OK);
        limited += usize::from(r.status == StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(
        limited, 2,
        "the limit (10 per user and address) did not apply"
    );
    let r = at("127.0.0.1", &Auth::Basic(&admin), "/v2/");
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.describe());
    // admin's access token still works, from that very address, as Basic, Bearer and at /token.
    let as_token = Creds::new("admin", &token);
    for auth in [Auth::Basic(&as_token), Auth::Bearer(&token)] {
        let r = at("127.0.0.1", &auth, "/v2/_catalog");
        assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
    }
    let r = at(
        "127.0.0.1",
        &Auth::Basic(&as_token),
        "/token?service=hpc-registry&scope=repository:admin/x:pull",
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
    // admin's password works from another client.
    let r = at("127.0.0.2", &Auth::Basic(&admin), "/v2/");
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());

    // Bad tokens are not counted at all: past the per-address limit (50), a client that sent
    // them still logs in with a password.
    let bogus = format!("hpcr_{}_{}", "0".repeat(12), "0".repeat(64));
    for _ in 0..55 {
        let r = at("127.0.0.3", &Auth::Bearer(&bogus), "/v2/");
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.describe());
        let r = at("127.0.0.3", &Auth::Bearer("a.b.c"), "/v2/");
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.describe());
    }
    let r = at("127.0.0.3", &Auth::Basic(&admin), "/v2/");
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());

    // Every refusal is on record, with the address it came from.
    let url = server.base_url();
    let out = cli(
        &[
            "admin",
            "audit",
            "--json",
            "--action",
            "auth.failure",
            "--server",
            &url,
        ],
        &[
            ("HPC_REGISTRY_USER", "admin"),
            // From 127.0.0.1, where admin's password is still refused: the token is not.
            ("HPC_REGISTRY_PASSWORD", &token),
        ],
        "",
    );
    let records: Vec<Value> = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("JSON record"))
        .collect();
    let count = |client: &str, outcome: &str| {
        records
            .iter()
            .filter(|r| r["client"] == client && r["outcome"] == outcome)
            .count()
    };
    assert_eq!(count("127.0.0.1", "denied"), 10, "{records:?}");
    assert_eq!(count("127.0.0.1", "rate-limited"), 3, "{records:?}");
    // 127.0.0.3's 110 refusals: past the audit's per-address burst the rest are counted in
    // `audit.suppressed` records (src/audit/throttle.rs), so written + suppressed is exact.
    let out = cli(
        &[
            "admin",
            "audit",
            "--json",
            "--action",
            "audit.suppressed",
            "--server",
            &url,
        ],
        &[
            ("HPC_REGISTRY_USER", "admin"),
            ("HPC_REGISTRY_PASSWORD", &token),
        ],
        "",
    );
    let suppressed: usize = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON record"))
        .filter(|r| r["client"] == "127.0.0.3")
        .map(|r| {
            let detail = r["detail"].as_str().unwrap_or_default();
            let n = detail.split_whitespace().next().unwrap_or_default();
            n.parse::<usize>()
                .unwrap_or_else(|_| panic!("count in {detail:?}"))
        })
        .sum();
    assert_eq!(
        count("127.0.0.3", "denied") + suppressed,
        110,
        "{records:?}"
    );
}
