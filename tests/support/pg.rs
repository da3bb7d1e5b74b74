//! A throwaway PostgreSQL server for tests and benchmarks: `initdb` into a temporary folder, `postgres` on a free
//! loopback port, stopped and deleted on drop. Uses Debian's server binaries (`/usr/lib/postgresql/<v>/bin`, installed
//! by `scripts/setup`); as root it runs them as the `postgres` user, which the server insists on.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server.
pub struct Pg {
    child: Child,
    _dir: tempfile::TempDir,
    /// `postgres://sibi@127.0.0.1:<port>/postgres`.
    pub url: String,
}

fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(Result::ok).map(|e| e.path().join("bin")).filter(|b| b.join("initdb").exists()).collect())
        .unwrap_or_default();
    found.sort();
    found.pop().expect("PostgreSQL server binaries not found under /usr/lib/postgresql: run scripts/setup")
}

fn as_server_user(program: &Path) -> Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Pg {
    /// Start a server; `durable` keeps fsync on (for honest benchmark figures), tests turn it off.
    pub fn start(durable: bool) -> Pg {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("sibi-pg").tempdir().unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let status = Command::new("chown").args(["postgres:postgres"]).arg(dir.path()).status().unwrap();
            assert!(status.success(), "chown of the PostgreSQL folder");
        }
        let data = dir.path().join("data");
        let out = as_server_user(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "sibi", "-E", "UTF8", "--no-locale", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = as_server_user(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-k"])
            .arg(dir.path())
            .args(["-c", if durable { "fsync=on" } else { "fsync=off" }])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("postgres://sibi@127.0.0.1:{port}/postgres");
        let pg = Pg { child, _dir: dir, url };
        let t = Instant::now();
        while postgres::Client::connect(&pg.url, postgres::NoTls).is_err() {
            assert!(t.elapsed() < Duration::from_secs(30), "PostgreSQL did not start within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        pg
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        // SIGINT to the postmaster itself (not to runuser): PostgreSQL's fast shutdown.
        let pid = std::fs::read_to_string(self._dir.path().join("data/postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
            .unwrap_or(self.child.id() as i32);
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
