//! Checks that several workflows share: digest and content headers, error codes, referrers indexes.

use crate::support::oci::*;

use super::runner::{Fail, R};

/// `if h := resp.Header().Get("Docker-Content-Digest"); h != "" { Expect(h).To(Equal(d)) }`
pub(super) fn check_optional_dcd(r: &Resp, digest: &str) -> R {
    let h = r.header("Docker-Content-Digest");
    ensure!(
        h.is_empty() || h == digest,
        "Docker-Content-Digest is {h:?}, expected {digest:?}:\n  {}",
        r.describe()
    );
    Ok(())
}

/// A manifest/blob read back must be byte-identical, with matching length and digest headers.
pub(super) fn check_content(
    r: &Resp,
    want: &[u8],
    digest: &str,
    content_type: Option<&str>,
    is_head: bool,
) -> R {
    ensure_status!(r, 200);
    if is_head {
        ensure!(
            r.body.is_empty(),
            "HEAD response has a body of {} bytes:\n  {}",
            r.body.len(),
            r.describe()
        );
    } else {
        ensure!(
            r.body == want,
            "body differs from what was pushed ({} bytes, expected {}):\n  {}",
            r.body.len(),
            want.len(),
            r.describe()
        );
    }
    let cl = r.header("Content-Length");
    ensure!(
        cl == want.len().to_string(),
        "Content-Length is {cl:?}, expected {}:\n  {}",
        want.len(),
        r.describe()
    );
    let dcd = r.header("Docker-Content-Digest");
    ensure!(dcd == digest, "Docker-Content-Digest is {dcd:?}, expected {digest} (issue #2 requires it on manifest HEAD/GET/PUT and blob HEAD):\n  {}", r.describe());
    if let Some(ct) = content_type {
        let got = r.header("Content-Type");
        ensure!(
            got == ct,
            "Content-Type is {got:?}, expected exactly {ct:?}:\n  {}",
            r.describe()
        );
    }
    Ok(())
}

/// Parses an OCI error body and checks `errors[0].code` is in the suite's `errorCodes`.
pub(super) fn check_suite_error_code(r: &Resp) -> R {
    let errs = r.errors()?;
    ensure!(
        !errs.is_empty(),
        "error body has an empty `errors` array:\n  {}",
        r.describe()
    );
    ensure!(
        SUITE_ERROR_CODES.contains(&errs[0].code.as_str()),
        "errors[0].code {:?} is not one of the suite's errorCodes {:?}:\n  {}",
        errs[0].code,
        SUITE_ERROR_CODES,
        r.describe()
    );
    Ok(())
}

pub(super) fn is_index_content_type(r: &Resp) -> bool {
    r.header("Content-Type") == MT_OCI_INDEX
}

pub(super) fn prefix(f: Fail, what: &str) -> Fail {
    match f {
        Fail::Fail(m) => Fail::Fail(format!("{what}: {m}")),
        s => s,
    }
}

/// api.go ReferrersList: 200, Content-Type OCI index, mediaType + schemaVersion; returns the descriptors.
pub(super) fn check_referrers_index(resp: &Resp) -> Result<Vec<serde_json::Value>, Fail> {
    ensure_status!(resp, 200);
    ensure!(
        is_index_content_type(resp),
        "Content-Type {:?}, expected {MT_OCI_INDEX:?}:\n  {}",
        resp.header("Content-Type"),
        resp.describe()
    );
    let v = resp.json()?;
    ensure!(
        v.get("mediaType").and_then(|x| x.as_str()) == Some(MT_OCI_INDEX)
            && v.get("schemaVersion").and_then(|x| x.as_i64()) == Some(2),
        "referrers response is not a valid OCI index (media type and schema version):\n  {}",
        resp.describe()
    );
    Ok(v.get("manifests")
        .and_then(|m| m.as_array())
        .cloned()
        .unwrap_or_default())
}
