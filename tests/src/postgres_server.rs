//! A real PostgreSQL server (Debian's `postgresql` package), started by a test in a temporary
//! folder on a free loopback port: `initdb`, then `postgres` itself as a child process.
//!
//! PostgreSQL refuses to run as root, and CI runs as root: the folder is then given to the
//! `postgres` user and the server runs as that user. Only TCP on 127.0.0.1 is opened (no Unix
//! socket), with trust authentication for the user `vouch`.
//!
//! [`shared`] is one server for a whole test process (each test takes a database of its own);
//! [`PostgresServer::start`] is one a test owns and may kill and restart.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

pub const USER: &str = "vouch";

/// Whether the servers a test needs must be present (CI sets `VOUCH_REQUIRE_SERVICES=1`).
fn required() -> bool {
    std::env::var("VOUCH_REQUIRE_SERVICES").as_deref() == Ok("1")
}

/// The folder of the newest PostgreSQL's programs Debian installed, if any.
fn binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// PostgreSQL is installed, or (outside CI) the test says once that it skipped.
pub fn available() -> bool {
    let present = binaries().is_some();
    if !present {
        assert!(
            !required(),
            "PostgreSQL is not installed: install the Debian package `postgresql` \
             (VOUCH_REQUIRE_SERVICES=1 makes this a failure)"
        );
        static SAID: Once = Once::new();
        SAID.call_once(|| eprintln!("skipped: the PostgreSQL tests need Debian's `postgresql`"));
    }
    present
}

/// Who the server runs as: the `postgres` user when this process is root, else this user.
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam reads a static record we copy out at once; tests do not call it
    // concurrently with anything that changes the password database.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!entry.is_null(), "running as root, PostgreSQL needs the `postgres` user (Debian's `postgresql` makes it)");
    // SAFETY: checked non-null above.
    let entry = unsafe { &*entry };
    Some((entry.pw_uid, entry.pw_gid))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
}

/// A running PostgreSQL, killed when dropped.
pub struct PostgresServer {
    folder: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    child: Option<Child>,
    /// Killed by the kernel when the thread that started it ends (the shared server, which no
    /// destructor stops); a server a test owns is killed when dropped instead.
    dies_with_its_thread: bool,
    /// Flushes its log to disk as a production server does (benchmarks); tests leave that off.
    durable: bool,
    /// Serves TLS with a certificate for 127.0.0.1 signed by this CA (PEM).
    pub tls_ca_pem: Option<String>,
}

impl PostgresServer {
    /// A new cluster in a temporary folder, started. `fsync` off is for tests: a killed
    /// *process* (Vouch's or the server's) loses nothing either way, only a machine's crash would.
    pub fn start() -> PostgresServer {
        PostgresServer::prepare(false, false).running()
    }

    /// A server that flushes its write-ahead log to disk on every commit, as in production: what
    /// a benchmark measures against.
    pub fn start_durable() -> PostgresServer {
        PostgresServer::prepare(false, true).running()
    }

    /// A new cluster in a temporary folder, not started yet.
    fn prepare(dies_with_its_thread: bool, durable: bool) -> PostgresServer {
        let bin = binaries().expect("PostgreSQL is installed (check `available()` first)");
        let folder = tempfile::tempdir().expect("temp dir");
        let user = server_user();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(folder.path(), Some(uid), Some(gid)).expect("the folder goes to postgres");
        }
        let data = folder.path().join("data");
        let output = as_server_user(Command::new(bin.join("initdb")), user)
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", USER, "-E", "UTF8", "--locale=C", "--no-sync"])
            .output()
            .expect("initdb runs");
        assert!(output.status.success(), "initdb failed: {}", String::from_utf8_lossy(&output.stderr));
        PostgresServer { folder, bin, port: free_port(), child: None, dies_with_its_thread, durable, tls_ca_pem: None }
    }

    fn running(mut self) -> PostgresServer {
        self.run();
        self
    }

    /// A server that also takes TLS, with a certificate for 127.0.0.1 signed by a CA of its own
    /// (in [`PostgresServer::tls_ca_pem`]).
    pub fn start_with_tls() -> PostgresServer {
        let mut server = PostgresServer::prepare(false, false);
        let (ca_pem, certificate, key) = test_certificate("127.0.0.1");
        let (certificate_file, key_file) =
            (server.folder.path().join("server.crt"), server.folder.path().join("server.key"));
        std::fs::write(&certificate_file, certificate).expect("write");
        std::fs::write(&key_file, key).expect("write");
        // PostgreSQL refuses a key that others may read.
        std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
        if let Some((uid, gid)) = server_user() {
            for file in [&certificate_file, &key_file] {
                std::os::unix::fs::chown(file, Some(uid), Some(gid)).expect("chown");
            }
        }
        server.tls_ca_pem = Some(ca_pem);
        server.running()
    }

    fn data(&self) -> PathBuf {
        self.folder.path().join("data")
    }

    /// Starts (or restarts) the server on its port and waits until it answers.
    pub fn run(&mut self) {
        let log = std::fs::File::create(self.folder.path().join("server.log")).expect("log file");
        let mut command = as_server_user(Command::new(self.bin.join("postgres")), server_user());
        command
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="])
            .args(["-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(log);
        if !self.durable {
            command.args(["-c", "fsync=off", "-c", "full_page_writes=off"]);
        }
        if self.tls_ca_pem.is_some() {
            let file = |name: &str| format!("{}", self.folder.path().join(name).display());
            command.args(["-c", "ssl=on", "-c", &format!("ssl_cert_file={}", file("server.crt"))]);
            command.args(["-c", &format!("ssl_key_file={}", file("server.key"))]);
        }
        if self.dies_with_its_thread {
            // SAFETY: prctl is async-signal-safe.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        self.child = Some(command.spawn().expect("postgres starts"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER, "-d", "postgres", "-q"])
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|child| child.try_wait().ok().flatten()) {
                panic!("postgres exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not answer on port {} within 30 s: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.folder.path().join("server.log")).unwrap_or_default()
    }

    /// Kills the server with SIGKILL, as a crash would (the data stays; `run` recovers it).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Its backends notice the postmaster is gone and exit; the next start waits for them.
        let pid_file = self.data().join("postmaster.pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        while pid_file.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            if self.backends_gone() {
                let _ = std::fs::remove_file(&pid_file);
            }
        }
    }

    fn backends_gone(&self) -> bool {
        // Backends are children of the killed postmaster, holding the port: free once they left.
        std::net::TcpListener::bind(("127.0.0.1", self.port)).is_ok()
    }

    /// A new, empty database on this server; its connection URL.
    pub fn database(&self, name: &str) -> String {
        let output = Command::new(self.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER, name])
            .output()
            .expect("createdb runs");
        assert!(output.status.success(), "createdb {name} failed: {}", String::from_utf8_lossy(&output.stderr));
        self.url(name)
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs SQL with `psql` on a database; its output (unaligned, tuples only).
    pub fn sql(&self, database: &str, sql: &str) -> String {
        let output = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER, "-d", database])
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("psql runs");
        assert!(output.status.success(), "psql failed on {sql}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    pub fn folder(&self) -> &Path {
        self.folder.path()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A CA of its own and a certificate for `host` it signed: (CA PEM, certificate PEM, key PEM).
pub fn test_certificate(host: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "Vouch test database CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_key = KeyPair::generate().expect("key");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let mut params = CertificateParams::new(vec![host.to_string()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, host);
    let key = KeyPair::generate().expect("key");
    let certificate = params.signed_by(&key, &ca, &ca_key).expect("certificate");
    (ca.pem(), certificate.pem(), key.serialize_pem())
}

fn as_server_user(mut command: Command, user: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
        // The server resolves paths and writes files as itself; a root HOME is not its own.
        command.env("HOME", "/tmp");
    }
    command
}

/// One server for the whole test process, started on first use by a thread that lives as long
/// as the process (the server dies with the thread that started it, see `PR_SET_PDEATHSIG`).
pub fn shared() -> &'static PostgresServer {
    static SERVER: OnceLock<PostgresServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let (started, receive) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("postgres-parent".to_string())
            .spawn(move || {
                started.send(PostgresServer::prepare(true, false).running()).expect("the test waits for its server");
                loop {
                    std::thread::park();
                }
            })
            .expect("thread");
        receive.recv().expect("the shared PostgreSQL started")
    })
}

/// A new database on the shared server, with a name no other test of this process takes.
pub fn fresh_database() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let number = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    shared().database(&format!("vouch_test_{}_{number}", std::process::id()))
}
