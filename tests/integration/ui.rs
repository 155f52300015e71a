//! The web UI against the real server: sessions (cookie flags plain and under TLS, logout and
//! expiry on the server side, a password change or revoked token ending them), CSRF refusals,
//! the security headers, failed logins limited and audited like any other, and the permission
//! model (bob sees nothing of alice's: not in lists, not by URL, not in the live status; an
//! admin sees everything). The headless-browser flows are `ui_browser.rs`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use reqwest::StatusCode;

use crate::support::users::*;
use crate::support::*;

/// A browser-like client of the UI: keeps cookies, follows no redirect (the tests look at them).
pub struct UiClient {
    client: Client,
    base: String,
    pub cookies: HashMap<String, String>,
    /// Every `Set-Cookie` value seen, newest last.
    pub set_cookies: Vec<String>,
}

/// One answer of the UI.
pub struct Page {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> Option<&str> {
        self.headers.get("location").and_then(|v| v.to_str().ok())
    }

    /// The value of the first `<input name=NAME value=…>` in the page.
    pub fn input(&self, name: &str) -> Option<String> {
        let at = self.body.find(&format!("name=\"{name}\""))?;
        let tag_start = self.body[..at].rfind('<')?;
        let tag_end = at + self.body[at..].find('>')?;
        let tag = &self.body[tag_start..tag_end];
        let v = tag.find("value=\"")? + "value=\"".len();
        Some(tag[v..v + tag[v..].find('"')?].to_owned())
    }
}

impl UiClient {
    pub fn new(base: &str) -> UiClient {
        UiClient::with_client(base, reqwest::blocking::Client::builder())
    }

    pub fn with_client(base: &str, builder: reqwest::blocking::ClientBuilder) -> UiClient {
        UiClient {
            client: builder
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            base: base.to_owned(),
            cookies: HashMap::new(),
            set_cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn finish(&mut self, r: reqwest::blocking::Response) -> Page {
        let status = r.status();
        let headers = r.headers().clone();
        for v in headers.get_all("set-cookie") {
            let v = v.to_str().expect("cookie text").to_owned();
            let pair = v.split(';').next().unwrap_or("");
            let (name, value) = pair.split_once('=').expect("name=value");
            if v.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
            self.set_cookies.push(v);
        }
        Page {
            status,
            headers,
            body: r.text().unwrap_or_default(),
        }
    }

    pub fn get(&mut self, path: &str) -> Page {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        self.finish(r)
    }

    pub fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body = fields
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect::<Vec<_>>()
            .join("&");
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        self.finish(r)
    }

    /// Logs in through the form; returns the answer to the login POST.
    pub fn login(&mut self, user: &str, secret: &str) -> Page {
        let form = self.get("/ui/login");
        assert_eq!(form.status, StatusCode::OK, "login form: {}", form.body);
        let token = form.input("login_csrf").expect("login token in the form");
        self.post(
            "/ui/login",
            &[("login_csrf", &token), ("user", user), ("secret", secret)],
        )
    }

    /// Logs in and asserts it worked.
    pub fn login_ok(&mut self, user: &str, secret: &str) {
        let r = self.login(user, secret);
        assert_eq!(
            r.status,
            StatusCode::SEE_OTHER,
            "login as {user}: {}",
            r.body
        );
        assert_eq!(r.location(), Some("/ui/"));
    }

    /// The CSRF token of the session (from any logged-in page's logout form).
    pub fn csrf(&mut self) -> String {
        let home = self.get("/ui/");
        assert_eq!(home.status, StatusCode::OK, "home: {}", home.body);
        home.input("csrf").expect("csrf field")
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn setup() -> Setup {
    Setup::new()
        .user("alice", &[])
        .user("bob", &[])
        .user("boss", &["--admin"])
}

fn audit_records(server: &Server, action: &str) -> Vec<serde_json::Value> {
    let boss = Creds::of("boss");
    let r = send(
        "GET",
        &server.url(&format!("/admin/audit?action={action}")),
        &Auth::Basic(&boss),
        None,
    );
    assert_eq!(r.status, StatusCode::OK, "audit: {}", r.describe());
    r.json().as_array().cloned().unwrap_or_default()
}

#[test]
fn sessions_cookies_csrf_and_logout() {
    let server = Server::start_secure(&setup(), &[]);
    let mut alice = UiClient::new(&server.base_url());

    // Not logged in: pages send the browser to the form, the JSON API answers 401.
    let r = alice.get("/ui/");
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), Some("/ui/login"));
    assert_eq!(
        alice.get("/ui/api/status/alice/x:1").status,
        StatusCode::UNAUTHORIZED
    );
    // A login form post without its token (login CSRF) is refused before any password check.
    let r = alice.post(
        "/ui/login",
        &[("user", "alice"), ("secret", "alice-password")],
    );
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);

    alice.login_ok("alice", "alice-password");
    let cookie = alice
        .set_cookies
        .iter()
        .rev()
        .find(|c| c.starts_with("hpcr_session="))
        .expect("session cookie")
        .clone();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(flag), "{flag} missing: {cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "Secure over plain HTTP: {cookie}"
    );
    let id = alice.cookies["hpcr_session"].clone();
    assert!(id.len() >= 43, "a 256-bit id: {id}");

    let home = alice.get("/ui/");
    assert_eq!(home.status, StatusCode::OK);
    let h = |name: &str| {
        home.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert!(h("content-security-policy").contains("default-src 'self'"));
    assert!(h("content-security-policy").contains("frame-ancestors 'none'"));
    assert_eq!(h("x-frame-options"), "DENY");
    assert_eq!(h("referrer-policy"), "same-origin");
    assert_eq!(h("x-content-type-options"), "nosniff");
    assert_eq!(h("cache-control"), "no-store");
    assert!(!home.body.contains("<script>"), "inline script in the page");

    // The session cookie is no credential anywhere but /ui.
    let c = http()
        .get(server.url("/v2/_catalog"))
        .header("cookie", format!("hpcr_session={id}"))
        .send()
        .unwrap();
    assert_eq!(c.status(), StatusCode::UNAUTHORIZED);
    let c = http()
        .get(server.url("/admin/users"))
        .header("cookie", format!("hpcr_session={id}"))
        .send()
        .unwrap();
    assert_eq!(c.status(), StatusCode::UNAUTHORIZED);

    // CSRF: a form post without the token, or with another one, is refused and changes nothing.
    let csrf = alice.csrf();
    for fields in [
        vec![("scope", "read"), ("description", "no token")],
        vec![
            ("scope", "read"),
            ("description", "wrong token"),
            ("csrf", "00"),
        ],
    ] {
        let r = alice.post("/ui/tokens", &fields);
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    }
    let listed = send(
        "GET",
        &server.url("/admin/tokens"),
        &Auth::Basic(&Creds::of("alice")),
        None,
    );
    assert_eq!(
        listed.json().as_array().map(Vec::len),
        Some(0),
        "{}",
        listed.text()
    );
    // With it: created, the secret shown once.
    let r = alice.post(
        "/ui/tokens",
        &[
            ("scope", "read"),
            ("description", "from the UI"),
            ("expires_days", "7"),
            ("csrf", &csrf),
        ],
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let secret = r.input("new-token").or_else(|| {
        let at = r.body.find("hpcr_")?;
        Some(r.body[at..at + r.body[at..].find('"')?].to_owned())
    });
    let secret = secret.expect("the new token's secret on the page");
    assert!(secret.starts_with("hpcr_"), "{secret}");
    let again = alice.get("/ui/tokens");
    assert!(!again.body.contains(&secret), "the secret was shown twice");
    assert!(again.body.contains("from the UI"));
    // The new token works against /v2 (it is a real token).
    let r = send(
        "GET",
        &server.url("/v2/_catalog"),
        &Auth::Basic(&Creds::new("alice", &secret)),
        None,
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
    assert_eq!(audit_records(&server, "token.create").len(), 1);

    // Logout ends the session on the server: replaying the old cookie does not work.
    let r = alice.post("/ui/logout", &[("csrf", &csrf)]);
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(
        !alice.cookies.contains_key("hpcr_session"),
        "cookie not cleared"
    );
    alice.cookies.insert("hpcr_session".into(), id);
    let r = alice.get("/ui/");
    assert_eq!(
        r.status,
        StatusCode::SEE_OTHER,
        "replayed cookie still logged in"
    );
    assert_eq!(r.location(), Some("/ui/login"));
}

#[test]
fn the_session_cookie_is_secure_under_tls() {
    let ca = TestCa::new();
    let args = ca.server_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_secure(&setup(), &args);
    let cert = std::fs::read(ca.path("ca.crt")).unwrap();
    let builder = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&cert).unwrap());
    let mut alice = UiClient::with_client(&server.https_url(""), builder);
    alice.login_ok("alice", "alice-password");
    let cookie = alice
        .set_cookies
        .iter()
        .find(|c| c.starts_with("hpcr_session="))
        .expect("session cookie");
    for flag in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(flag), "{flag} missing under TLS: {cookie}");
    }
    assert_eq!(alice.get("/ui/").status, StatusCode::OK);
}

#[test]
fn a_password_change_or_a_revoked_token_ends_the_session() {
    let server = Server::start_secure(&setup(), &[]);
    let alice_creds = Creds::of("alice");
    let mut by_password = UiClient::new(&server.base_url());
    by_password.login_ok("alice", &alice_creds.secret);
    // A token login (no user name needed for an access token).
    let created = send(
        "POST",
        &server.url("/admin/tokens"),
        &Auth::Basic(&alice_creds),
        Some((
            "application/json",
            br#"{"scope":"read-write","description":"ui"}"#.to_vec(),
        )),
    );
    assert_eq!(
        created.status,
        StatusCode::CREATED,
        "{}",
        created.describe()
    );
    let token = created.json()["token"].as_str().unwrap().to_owned();
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let mut by_token = UiClient::new(&server.base_url());
    by_token.login_ok("", &token);
    assert!(by_token.get("/ui/").body.contains("alice"));

    let r = send(
        "DELETE",
        &server.url(&format!("/admin/tokens/{id}")),
        &Auth::Basic(&alice_creds),
        None,
    );
    assert!(r.status.is_success(), "revoke: {}", r.describe());
    assert_eq!(by_token.get("/ui/").status, StatusCode::SEE_OTHER);
    assert_eq!(by_password.get("/ui/").status, StatusCode::OK);

    let r = send(
        "PUT",
        &server.url("/admin/users/alice/password"),
        &Auth::Basic(&alice_creds),
        Some((
            "application/json",
            br#"{"password":"a-new-password-1"}"#.to_vec(),
        )),
    );
    assert!(r.status.is_success(), "password change: {}", r.describe());
    let r = by_password.get("/ui/");
    assert_eq!(
        r.status,
        StatusCode::SEE_OTHER,
        "session survived a password change"
    );
    by_password.login_ok("alice", "a-new-password-1");
}

#[test]
fn failed_ui_logins_are_limited_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[auth]\nmax_failed_logins = 3\n").unwrap();
    let server = Server::start_secure(&setup(), &["--config", config.to_str().unwrap()]);
    let mut mallory = UiClient::new(&server.base_url());
    let mut statuses = Vec::new();
    for i in 0..5 {
        let r = mallory.login("alice", &format!("guess-{i}"));
        assert!(
            !r.body.contains(&format!("guess-{i}")),
            "the password echoed"
        );
        statuses.push(r.status);
    }
    assert_eq!(
        &statuses[..3],
        &[StatusCode::UNAUTHORIZED; 3],
        "{statuses:?}"
    );
    assert_eq!(statuses[4], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    // The right password is refused too while alice is locked out from this address, exactly as
    // Basic auth on /v2 is.
    let r = mallory.login("alice", "alice-password");
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let r = send(
        "GET",
        &server.url("/v2/_catalog"),
        &Auth::Basic(&Creds::of("alice")),
        None,
    );
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.describe());

    let failures: Vec<_> = audit_records(&server, "auth.failure")
        .into_iter()
        .filter(|r| r["reference"] == "/ui/login")
        .collect();
    assert!(failures.len() >= 5, "{failures:?}");
    assert!(
        failures.iter().all(|r| r["user"] == "alice"),
        "{failures:?}"
    );
    assert!(failures.iter().any(|r| r["outcome"] == "rate-limited"));
    assert!(failures.iter().any(|r| r["outcome"] == "denied"));

    let mut bob = UiClient::new(&server.base_url());
    bob.login_ok("bob", "bob-password");
    let ok = audit_records(&server, "auth.success");
    assert!(
        ok.iter()
            .any(|r| r["user"] == "bob" && r["reference"] == "ui login"),
        "{ok:?}"
    );
}

/// The same 404 page for what bob may not read as for what does not exist.
fn assert_same_404(bob: &mut UiClient, hidden: &str, missing: &str) {
    let a = bob.get(hidden);
    let b = bob.get(missing);
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{hidden}: {}", a.body);
    assert_eq!(b.status, StatusCode::NOT_FOUND, "{missing}: {}", b.body);
    assert_eq!(a.body, b.body, "{hidden} and {missing} answer differently");
}

#[test]
fn bob_sees_nothing_of_alices_and_an_admin_sees_all() {
    let server = Server::start_secure(&setup(), &[]);
    let pushed = push_as(&server, &Creds::of("alice"), "alice/secret-tool", "1");
    push_as(&server, &Creds::of("bob"), "bob/mine", "2");

    let mut alice = UiClient::new(&server.base_url());
    alice.login_ok("alice", "alice-password");
    let home = alice.get("/ui/");
    assert!(home.body.contains("alice/secret-tool"), "{}", home.body);
    assert!(!home.body.contains("bob/mine"));
    let repo = alice.get("/ui/r/alice/secret-tool");
    assert_eq!(repo.status, StatusCode::OK);
    assert!(repo.body.contains(&pushed.digest[..19]), "{}", repo.body);
    let image = alice.get("/ui/i/alice/secret-tool:1");
    assert_eq!(image.status, StatusCode::OK, "{}", image.body);
    assert!(image.body.contains(&pushed.digest));
    assert!(image.body.contains(&pushed.layer_digest[..19]));
    let status = alice.get("/ui/api/status/alice/secret-tool:1");
    assert_eq!(status.status, StatusCode::OK, "{}", status.body);

    let mut bob = UiClient::new(&server.base_url());
    bob.login_ok("bob", "bob-password");
    let home = bob.get("/ui/");
    assert!(home.body.contains("bob/mine"));
    assert!(
        !home.body.contains("alice"),
        "alice's repository listed to bob"
    );
    assert_same_404(
        &mut bob,
        "/ui/r/alice/secret-tool",
        "/ui/r/alice/no-such-tool",
    );
    assert_same_404(
        &mut bob,
        "/ui/i/alice/secret-tool:1",
        "/ui/i/alice/no-such-tool:1",
    );
    assert_same_404(
        &mut bob,
        "/ui/api/status/alice/secret-tool:1",
        "/ui/api/status/alice/no-such-tool:1",
    );
    // The catalog agrees.
    let r = send(
        "GET",
        &server.url("/v2/_catalog"),
        &Auth::Basic(&Creds::of("bob")),
        None,
    );
    assert_eq!(r.json()["repositories"], serde_json::json!(["bob/mine"]));
    // Nor in the generator: not offered, and refused like an image that does not exist.
    let generator = bob.get("/ui/script");
    assert_eq!(generator.status, StatusCode::OK, "{}", generator.body);
    assert!(generator.body.contains("bob/mine:2"), "{}", generator.body);
    assert!(
        !generator.body.contains("alice/"),
        "alice's image offered to bob"
    );
    let csrf = bob.csrf();
    let generate = |bob: &mut UiClient, image: &str| {
        let r = bob.post(
            "/ui/script",
            &[
                ("csrf", &csrf),
                ("image", image),
                ("template", "small"),
                ("command", "true"),
                ("action", "generate"),
            ],
        );
        (r.status, r.body.replace(image, "IMAGE"))
    };
    let hidden = generate(&mut bob, "alice/secret-tool:1");
    let missing = generate(&mut bob, "alice/no-such-tool:1");
    assert_eq!(hidden.0, StatusCode::NOT_FOUND);
    assert_eq!(hidden, missing);
    let own = generate(&mut bob, "bob/mine:2");
    assert_eq!(own.0, StatusCode::OK, "{}", own.1);
    assert!(own.1.contains("hpc-registry run"), "{}", own.1);
    // Bob is no admin.
    assert_eq!(bob.get("/ui/admin/builds").status, StatusCode::FORBIDDEN);
    assert_eq!(bob.get("/ui/api/counters").status, StatusCode::FORBIDDEN);

    let mut boss = UiClient::new(&server.base_url());
    boss.login_ok("boss", "boss-password");
    let home = boss.get("/ui/");
    assert!(home.body.contains("alice/secret-tool") && home.body.contains("bob/mine"));
    assert_eq!(boss.get("/ui/i/alice/secret-tool:1").status, StatusCode::OK);
    for page in [
        "/ui/admin/",
        "/ui/admin/users",
        "/ui/admin/usage",
        "/ui/admin/builds",
        "/ui/admin/audit?action=auth",
    ] {
        let r = boss.get(page);
        assert_eq!(r.status, StatusCode::OK, "{page}: {}", r.body);
    }
    assert!(boss.get("/ui/admin/users").body.contains("bob"));
    assert!(boss.get("/ui/admin/usage").body.contains("alice"));
    // The counters are the audit trail's: two pushes so far (a manifest each).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c: serde_json::Value =
            serde_json::from_str(&boss.get("/ui/api/counters").body).expect("counters JSON");
        if c["last_hour"]["pushes"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "counters: {c}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn sessions_expire_when_idle_and_at_their_maximum_age() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[ui]\nsession_idle_secs = 3\nsession_max_secs = 5\n",
    )
    .unwrap();
    let server = Server::start_secure(&setup(), &["--config", config.to_str().unwrap()]);
    let mut alice = UiClient::new(&server.base_url());
    alice.login_ok("alice", "alice-password");
    let max_age = alice
        .set_cookies
        .iter()
        .find(|c| c.starts_with("hpcr_session="))
        .expect("session cookie")
        .clone();
    assert!(max_age.contains("Max-Age=5"), "{max_age}");
    // Used every 2 s, it outlives its idle time but not its maximum age.
    for _ in 0..2 {
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(alice.get("/ui/").status, StatusCode::OK);
    }
    std::thread::sleep(Duration::from_secs(2));
    let r = alice.get("/ui/");
    assert_eq!(
        r.status,
        StatusCode::SEE_OTHER,
        "session outlived session_max_secs"
    );
    // Unused, it ends after its idle time.
    alice.login_ok("alice", "alice-password");
    assert_eq!(alice.get("/ui/").status, StatusCode::OK);
    std::thread::sleep(Duration::from_secs(4));
    let r = alice.get("/ui/");
    assert_eq!(r.status, StatusCode::SEE_OTHER, "idle session still open");
}
