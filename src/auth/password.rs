//! Password hashing: argon2id for everything this registry stores, bcrypt only to verify hashes
//! imported from Apache htpasswd files (upgraded to argon2id at the user's next login).
//!
//! Each argon2id computation needs 19 MiB of working memory. It is mapped with `mmap` and
//! unmapped afterwards ([`Memory`]) rather than taken from the allocator: glibc's malloc raises
//! its mmap threshold after the first such free and then serves the next 19 MiB from the calling
//! thread's arena, which keeps it resident, so a login storm over the blocking pool's many threads
//! left one 19 MiB copy per thread behind (the 161 MiB peak of issue 15). Verifications run in a
//! [`HashPool`]: at most its size at once, the rest queued, so memory is bounded by the pool.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use subtle::ConstantTimeEq;

use super::AuthError;

/// Outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    No,
    Yes,
    /// Correct, but stored with an older scheme (bcrypt): store a fresh argon2id hash.
    YesRehash,
}

/// Salt length of new hashes (the PHC recommendation, as the argon2 crate uses).
const SALT_LEN: usize = 16;

/// argon2id's working memory for one computation: an anonymous mapping, zeroed by the kernel and
/// given back to it on drop (see the module comment for why not the allocator).
pub struct Memory {
    ptr: NonNull<Block>,
    blocks: usize,
}

// SAFETY: `Memory` owns its mapping exclusively (like a `Box<[Block]>`); nothing else aliases it.
unsafe impl Send for Memory {}

impl Memory {
    /// Maps room for `blocks` argon2 blocks (1 KiB each).
    pub fn map(blocks: usize) -> Result<Memory, AuthError> {
        let len = blocks
            .checked_mul(std::mem::size_of::<Block>())
            .filter(|l| *l > 0)
            .ok_or_else(|| AuthError::Hash("bad argon2 memory size".into()))?;
        // SAFETY: an anonymous private mapping with no address hint has no preconditions; the
        // result is checked against MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(AuthError::Hash(format!(
                "cannot map {len} bytes for argon2: {}",
                std::io::Error::last_os_error()
            )));
        }
        let ptr = NonNull::new(p.cast::<Block>())
            .ok_or_else(|| AuthError::Hash("mmap returned null".into()))?;
        Ok(Memory { ptr, blocks })
    }

    /// Room for the parameters new hashes use (19 MiB).
    pub fn for_default_params() -> Result<Memory, AuthError> {
        Memory::map(Params::default().block_count())
    }

    fn blocks(&mut self) -> &mut [Block] {
        // SAFETY: the mapping is page-aligned (more than `Block`'s 64-byte alignment), `blocks`
        // blocks long, readable and writable, and all-zero bytes are a valid `Block` (an array of
        // u64). `&mut self` makes the slice the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.blocks) }
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map` (same address and length), once.
        unsafe {
            libc::munmap(
                self.ptr.as_ptr().cast(),
                self.blocks * std::mem::size_of::<Block>(),
            );
        }
    }
}

/// Runs argon2 with `params` into `out`, in `mem` when it is large enough, else in a mapping of
/// its own (a stored hash with a higher memory cost than today's default).
fn argon2_into(
    argon: &Argon2,
    block_count: usize,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
    mem: &mut Memory,
) -> Result<(), AuthError> {
    let mut run = |m: &mut Memory| {
        argon
            .hash_password_into_with_memory(password, salt, out, m.blocks())
            .map_err(|e| AuthError::Hash(e.to_string()))
    };
    if mem.blocks >= block_count {
        run(mem)
    } else {
        run(&mut Memory::map(block_count)?)
    }
}

/// argon2id (the crate's defaults: 19 MiB, 2 passes, the OWASP recommendation) with a random salt,
/// as a PHC string. Maps its own working memory (used by the admin API and the CLI, not by logins).
pub fn hash(password: &str) -> Result<String, AuthError> {
    hash_in(password, &mut Memory::for_default_params()?)
}

/// [`hash`] in the given working memory.
pub fn hash_in(password: &str, mem: &mut Memory) -> Result<String, AuthError> {
    let params = Params::default();
    let mut salt = [0u8; SALT_LEN];
    super::random_bytes(&mut salt)?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    argon2_into(
        &argon,
        params.block_count(),
        password.as_bytes(),
        &salt,
        &mut out,
        mem,
    )?;
    // The PHC string format, as `argon2::PasswordHash` prints it (B64 = standard alphabet, no
    // padding); the unit test checks the crate's own verifier accepts it.
    Ok(format!(
        "$argon2id$v={}$m={},t={},p={}${}${}",
        u32::from(Version::V0x13),
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(out)
    ))
}

/// Checks `password` against a stored argon2id PHC string or bcrypt (`$2a$`, `$2b$`, `$2y$`) hash,
/// with argon2's working memory in `mem`. Both comparisons are constant-time.
pub fn verify(password: &str, stored: &str, mem: &mut Memory) -> Verified {
    if is_bcrypt(stored) {
        return match bcrypt::verify(password, stored) {
            Ok(true) => Verified::YesRehash,
            _ => Verified::No,
        };
    }
    match verify_argon2(password, stored, mem) {
        Some(true) => Verified::Yes,
        _ => Verified::No,
    }
}

/// `None`: not a PHC string this build can check.
fn verify_argon2(password: &str, stored: &str, mem: &mut Memory) -> Option<bool> {
    let parsed = PasswordHash::new(stored).ok()?;
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return None;
    };
    let algorithm = Algorithm::try_from(parsed.algorithm.as_str()).ok()?;
    let version = match parsed.version {
        Some(v) => Version::try_from(v).ok()?,
        None => Version::default(),
    };
    let params = Params::try_from(&parsed).ok()?;
    let block_count = params.block_count();
    let mut buf = [0u8; 64];
    let out = buf.get_mut(..expected.len())?;
    let argon = Argon2::new(algorithm, version, params);
    argon2_into(&argon, block_count, password.as_bytes(), salt, out, mem).ok()?;
    Some(bool::from(out.ct_eq(expected.as_bytes())))
}

/// Burns the time of one verification so that an unknown user name cannot be told apart from a
/// wrong password by the response time.
pub fn verify_dummy(password: &str, mem: &mut Memory) {
    use std::sync::OnceLock;
    static DUMMY: OnceLock<String> = OnceLock::new();
    let stored = DUMMY.get_or_init(|| hash("not a real password").unwrap_or_default());
    let _ = verify(password, stored, mem);
}

/// At most `size` password verifications at once, each in its own [`Memory`]; callers beyond
/// that wait in the semaphore's queue, which costs them a future, not 19 MiB. Only password
/// logins come here: token and MUNGE requests never wait on it.
pub struct HashPool {
    permits: Arc<tokio::sync::Semaphore>,
    shared: Arc<Shared>,
}

struct Shared {
    size: usize,
    /// Callers waiting for a permit: while there are any, a finished job's memory is handed on
    /// instead of unmapped (saves the page faults of a fresh mapping in a storm).
    queued: AtomicUsize,
    idle: Mutex<Vec<Memory>>,
}

impl Shared {
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Memory>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl HashPool {
    pub fn new(size: usize) -> HashPool {
        let size = size.max(1);
        HashPool {
            permits: Arc::new(tokio::sync::Semaphore::new(size)),
            shared: Arc::new(Shared {
                size,
                queued: AtomicUsize::new(0),
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Runs `f` with working memory on tokio's blocking pool once a slot is free.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Memory) -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        self.shared.queued.fetch_add(1, Ordering::SeqCst);
        let permit = Arc::clone(&self.permits).acquire_owned().await;
        self.shared.queued.fetch_sub(1, Ordering::SeqCst);
        let permit = permit.map_err(|e| AuthError::Hash(e.to_string()))?;
        // Mappings are made only by permit holders and only when none is idle, so there are
        // never more than `size` of them.
        let reused = self.shared.idle().pop();
        let mut mem = match reused {
            Some(m) => m,
            None => {
                // 19 MiB are about to become resident: first give back what malloc holds free,
                // so a login's peak is the live heap plus its working memory, not the
                // high-water mark of the last burst of requests plus it.
                crate::memory::release_free_heap();
                Memory::for_default_params()?
            }
        };
        let shared = Arc::clone(&self.shared);
        // The permit moves into the job and is released only after its memory is handed on or
        // unmapped: a caller that gives up (a client hanging up) does not free its slot while
        // the computation it started still runs, and the next job finds the memory idle.
        tokio::task::spawn_blocking(move || {
            let out = f(&mut mem);
            let mut idle = shared.idle();
            if shared.queued.load(Ordering::SeqCst) > 0 && idle.len() < shared.size {
                idle.push(mem);
            } else {
                // Nobody waiting: every mapping goes back to the kernel.
                idle.clear();
                drop(mem);
            }
            drop(idle);
            drop(permit);
            out
        })
        .await
        .map_err(|e| AuthError::Hash(format!("password hashing task failed: {e}")))
    }

    /// Mappings currently kept for the next job (for tests).
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.shared.idle().len()
    }
}

pub fn is_bcrypt(stored: &str) -> bool {
    ["$2a$", "$2b$", "$2y$", "$2x$"]
        .iter()
        .any(|p| stored.starts_with(p))
}

/// A random password of `len` characters from an alphabet without look-alikes (0/O, 1/l/I).
pub fn random_password(len: usize) -> Result<String, AuthError> {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        super::random_bytes(&mut buf)?;
        // Rejection sampling keeps every character equally likely.
        let limit = 256 - 256 % ALPHABET.len();
        for b in buf {
            if (b as usize) < limit && out.len() < len {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    fn mem() -> Memory {
        Memory::for_default_params().unwrap()
    }

    #[test]
    fn argon2id_round_trip() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        let mut m = mem();
        assert_eq!(verify("correct horse", &h, &mut m), Verified::Yes);
        assert_eq!(verify("wrong", &h, &mut m), Verified::No);
        assert_eq!(verify("x", "garbage", &mut m), Verified::No);
    }

    #[test]
    fn hashes_agree_with_the_argon2_crate_both_ways() {
        // Ours verifies with the crate's verifier...
        let ours = hash("correct horse").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horsE", &parsed)
            .is_err());
        // ...and a hash the crate made (as stored by earlier versions) verifies with ours.
        let theirs = Argon2::default()
            .hash_password(b"battery staple")
            .unwrap()
            .to_string();
        let mut m = mem();
        assert_eq!(verify("battery staple", &theirs, &mut m), Verified::Yes);
        assert_eq!(verify("battery stapl", &theirs, &mut m), Verified::No);
        // A stored hash with more memory than the default still verifies (own mapping).
        let big = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(24 * 1024, 1, 1, None).unwrap(),
        )
        .hash_password(b"more memory")
        .unwrap()
        .to_string();
        assert_eq!(verify("more memory", &big, &mut m), Verified::Yes);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_bounds_concurrent_jobs_and_gives_memory_back() {
        let pool = Arc::new(HashPool::new(2));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let jobs: Vec<_> = (0..12)
            .map(|i| {
                let (pool, running, most) = (pool.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    pool.run(move |m| {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        let h = hash_in(&format!("password {i}"), m).unwrap();
                        let ok = verify(&format!("password {i}"), &h, m);
                        running.fetch_sub(1, Ordering::SeqCst);
                        ok
                    })
                    .await
                    .unwrap()
                })
            })
            .collect();
        for j in jobs {
            assert_eq!(j.await.unwrap(), Verified::Yes);
        }
        let most = most.load(Ordering::SeqCst);
        assert!((1..=2).contains(&most), "{most} jobs ran at once");
        assert_eq!(pool.idle_count(), 0, "idle mappings kept after the storm");
    }

    #[test]
    fn bcrypt_from_htpasswd_verifies_and_asks_for_rehash() {
        // `htpasswd -nbB alice secret` style hash (cost 4 to keep the test fast).
        let h = bcrypt::hash("secret", 4)
            .unwrap()
            .replacen("$2b$", "$2y$", 1);
        let mut m = mem();
        assert_eq!(verify("secret", &h, &mut m), Verified::YesRehash);
        assert_eq!(verify("Secret", &h, &mut m), Verified::No);
    }

    #[test]
    fn random_passwords_differ_and_have_the_length() {
        let a = random_password(20).unwrap();
        let b = random_password(20).unwrap();
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
    }
}
