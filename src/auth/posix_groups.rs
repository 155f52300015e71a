//! Groups from the host (`[auth] posix_groups = true`): a registry user `alice` is also a
//! read-write member of every POSIX group of the host account `alice` (via NSS, so LDAP/SSSD
//! groups count too), and so shares `<group>/…` with its other members. Only groups with a gid of
//! at least `posix_groups_min_gid` (default 1000) count: system groups such as `sudo`, `adm` or
//! `users` must not become shared namespaces by accident. Nor may a group named like a user: with
//! user-private groups (`alice`'s group `alice`, often with extra members) that would make the
//! members writers of `alice/…`; host accounts are filtered here, registry users where the
//! database is at hand (`Access::authenticate`). Lookups are cached briefly, since NSS may ask a
//! directory server.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a user's host groups are reused before they are looked up again.
const TTL: Duration = Duration::from_secs(60);
/// Cached users before the cache is cleared (bounds memory against many distinct names).
const MAX_CACHED: usize = 10_000;

pub struct HostGroups {
    min_gid: u32,
    cache: Mutex<HashMap<String, (Instant, Vec<String>)>>,
}

impl HostGroups {
    pub fn new(min_gid: u32) -> HostGroups {
        HostGroups {
            min_gid,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The usable host groups of `user` (cached); empty when there is no such host account.
    pub fn of(&self, user: &str) -> Vec<String> {
        let now = Instant::now();
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, groups)) = cache.get(user) {
                if now.duration_since(*at) < TTL {
                    return groups.clone();
                }
            }
        }
        let groups: Vec<String> = lookup(user)
            .into_iter()
            .filter(|(gid, name)| {
                *gid >= self.min_gid
                    && super::manage::check_name(name).is_ok()
                    && !host_user_exists(name)
            })
            .map(|(_, name)| name)
            .collect();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(user.to_owned(), (now, groups.clone()));
        groups
    }
}

/// `(gid, name)` of every group of host user `user` (primary included), via getgrouplist(3).
pub fn lookup(user: &str) -> Vec<(u32, String)> {
    let Ok(cuser) = CString::new(user) else {
        return Vec::new();
    };
    let Some(primary) = primary_gid(&cuser) else {
        return Vec::new();
    };
    let mut n: libc::c_int = 64;
    let gids = loop {
        let mut buf = vec![0 as libc::gid_t; n as usize];
        let mut count = n;
        // SAFETY: buf has room for `count` gids; getgrouplist writes at most that many and
        // reports the needed size in `count` when it returns -1.
        let rc =
            unsafe { libc::getgrouplist(cuser.as_ptr(), primary, buf.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            buf.truncate(count.max(0) as usize);
            break buf;
        }
        if count <= n || count > 65_536 {
            return Vec::new();
        }
        n = count;
    };
    let mut out: Vec<(u32, String)> = gids
        .into_iter()
        .filter_map(|gid| group_name(gid).map(|name| (gid, name)))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether the host has an account called `name` (its namespace is that user's, not a group's).
fn host_user_exists(name: &str) -> bool {
    CString::new(name).is_ok_and(|c| primary_gid(&c).is_some())
}

fn primary_gid(user: &CStr) -> Option<libc::gid_t> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: zeroed passwd is a valid out-parameter; buf outlives the call; only pw_gid is read.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwnam_r(
            user.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        (rc == 0 && !result.is_null()).then_some(pwd.pw_gid)
    }
}

fn group_name(gid: libc::gid_t) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 64 * 1024];
    // SAFETY: zeroed group is a valid out-parameter; the name is copied before buf is dropped.
    unsafe {
        let mut grp: libc::group = std::mem::zeroed();
        let mut result: *mut libc::group = std::ptr::null_mut();
        let rc = libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr(), buf.len(), &mut result);
        if rc != 0 || result.is_null() || grp.gr_name.is_null() {
            return None;
        }
        CStr::from_ptr(grp.gr_name).to_str().ok().map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_in_group_root_and_unknown_users_in_none() {
        assert!(lookup("root").contains(&(0, "root".to_owned())));
        assert!(lookup("no-such-user-hpcreg").is_empty());
        // gid 0 is below any sane minimum: filtered out.
        assert!(!HostGroups::new(1000)
            .of("root")
            .contains(&"root".to_owned()));
        // Group `root` is named like the host account `root`: never a namespace.
        assert!(!HostGroups::new(0).of("root").contains(&"root".to_owned()));
        assert!(host_user_exists("root") && !host_user_exists("no-such-user-hpcreg"));
    }
}
