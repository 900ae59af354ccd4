//! A real OpenLDAP `slapd` (Debian's `slapd` package), started by a test in a temporary folder on
//! a free loopback port, with a schema carrying the Active Directory attributes Vouch reads
//! (`sAMAccountName`, `userPrincipalName`, `managedBy`, `dNSHostName`, an extension attribute
//! for the Discord id) and loaded with `ldapadd` / changed with `ldapmodify` (`ldap-utils`).

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

pub const SUFFIX: &str = "dc=corp,dc=example";
pub const ADMIN_DN: &str = "cn=admin,dc=corp,dc=example";
pub const ADMIN_PASSWORD: &str = "slapd-e2e-admin-secret";

const SLAPD: &str = "/usr/sbin/slapd";
const SLAPADD: &str = "/usr/sbin/slapadd";
const LDAPADD: &str = "/usr/bin/ldapadd";
const LDAPMODIFY: &str = "/usr/bin/ldapmodify";

/// The AD attributes Vouch reads, under a private arc (these OIDs are for tests only).
const AD_SCHEMA: &str = r#"
attributetype ( 1.3.6.1.4.1.55555.1.1 NAME 'sAMAccountName'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.55555.1.2 NAME 'userPrincipalName'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.55555.1.3 NAME 'managedBy' SUP distinguishedName SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.55555.1.4 NAME 'dNSHostName'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.55555.1.5 NAME 'extensionAttribute1'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.55555.2.1 NAME 'vouchTestAdUser' SUP top AUXILIARY
  MAY ( sAMAccountName $ userPrincipalName $ extensionAttribute1 ) )
objectclass ( 1.3.6.1.4.1.55555.2.2 NAME 'computer' SUP top STRUCTURAL
  MUST cn MAY ( dNSHostName $ managedBy $ sAMAccountName $ description ) )
objectclass ( 1.3.6.1.4.1.55555.2.3 NAME 'msDS-GroupManagedServiceAccount' SUP top STRUCTURAL
  MUST cn MAY ( sAMAccountName $ managedBy $ description ) )
"#;

/// Whether the servers a test needs must be present (CI sets `VOUCH_REQUIRE_SERVICES=1`).
fn required() -> bool {
    std::env::var("VOUCH_REQUIRE_SERVICES").as_deref() == Ok("1")
}

/// The tools are installed, or (outside CI) the test says once that it skipped.
pub fn available() -> bool {
    let present = [SLAPD, LDAPADD, LDAPMODIFY].iter().all(|tool| Path::new(tool).exists());
    if !present {
        assert!(
            !required(),
            "slapd and ldapmodify are not installed: install the Debian packages `slapd` and `ldap-utils` \
             (VOUCH_REQUIRE_SERVICES=1 makes this a failure)"
        );
        static SAID: Once = Once::new();
        SAID.call_once(|| {
            eprintln!("skipped: the LDAP directory-sync tests need Debian's `slapd` and `ldap-utils`");
        });
    }
    present
}

/// A running `slapd`, stopped when dropped.
pub struct Slapd {
    child: Option<Child>,
    folder: tempfile::TempDir,
    pub port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
}

/// The base entries every test directory starts with.
fn base_entries() -> String {
    format!(
        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: corp\no: Corp\n\n\
         dn: ou=People,{SUFFIX}\nobjectClass: organizationalUnit\nou: People\n\n\
         dn: ou=Service Accounts,{SUFFIX}\nobjectClass: organizationalUnit\nou: Service Accounts\n\n\
         dn: ou=Workstations,{SUFFIX}\nobjectClass: organizationalUnit\nou: Workstations\n\n\
         dn: ou=Servers,{SUFFIX}\nobjectClass: organizationalUnit\nou: Servers\n\n\
         dn: ou=Groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: Groups\n\n"
    )
}

impl Slapd {
    /// Starts an empty directory with the base entries (`ou=People`, `ou=Groups`, ...).
    pub fn start() -> Slapd {
        let mut slapd = Slapd::prepare();
        slapd.run();
        slapd.add(&base_entries());
        slapd
    }

    /// Starts a directory bulk-loaded offline with `slapadd` (the base entries, then `ldif`):
    /// how a benchmark gets a large directory in seconds rather than minutes of `ldapadd`.
    pub fn start_loaded(ldif: &str) -> Slapd {
        let mut slapd = Slapd::prepare();
        let file = slapd.folder.path().join("load.ldif");
        std::fs::write(&file, format!("{}{ldif}", base_entries())).expect("ldif");
        let output = Command::new(SLAPADD)
            .args(["-q", "-f"])
            .arg(slapd.folder.path().join("slapd.conf"))
            .arg("-l")
            .arg(&file)
            .output()
            .expect("slapadd runs");
        assert!(output.status.success(), "slapadd failed: {}", String::from_utf8_lossy(&output.stderr));
        slapd.run();
        slapd
    }

    fn prepare() -> Slapd {
        let folder = tempfile::tempdir().expect("temp dir");
        let data = folder.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        std::fs::write(folder.path().join("ad.schema"), AD_SCHEMA).expect("schema");
        let config = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include {schema}\n\
             pidfile {folder}/slapd.pid\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             database mdb\n\
             maxsize 4294967296\n\
             suffix \"{SUFFIX}\"\n\
             rootdn \"{ADMIN_DN}\"\n\
             rootpw {ADMIN_PASSWORD}\n\
             directory {data}\n\
             index objectClass eq\n\
             index entryCSN eq\n",
            schema = folder.path().join("ad.schema").display(),
            folder = folder.path().display(),
            data = data.display(),
        );
        std::fs::write(folder.path().join("slapd.conf"), config).expect("slapd.conf");
        Slapd { child: None, folder, port: free_port() }
    }

    /// Starts (or restarts) the server process on its port and waits until it accepts.
    pub fn run(&mut self) {
        let child = Command::new(SLAPD)
            .args(["-d", "0", "-f"])
            .arg(self.folder.path().join("slapd.conf"))
            .arg("-h")
            .arg(self.url())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("slapd starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().and_then(|child| child.try_wait().ok().flatten()) {
                let mut log = String::new();
                if let Some(mut stderr) = self.child.as_mut().and_then(|child| child.stderr.take()) {
                    let _ = std::io::Read::read_to_string(&mut stderr, &mut log);
                }
                panic!("slapd exited with {status}: {log}");
            }
            assert!(Instant::now() < deadline, "slapd did not listen on {} within 20 s", self.url());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (the data stays, so `run` brings the same directory back).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    fn tool(&self, tool: &str, ldif: &str) {
        let mut child = Command::new(tool)
            .args(["-x", "-H", &self.url(), "-D", ADMIN_DN, "-w", ADMIN_PASSWORD])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ldap tool runs");
        child.stdin.take().expect("stdin").write_all(ldif.as_bytes()).expect("ldif written");
        let output = child.wait_with_output().expect("ldap tool finishes");
        assert!(output.status.success(), "{tool} failed: {}\n{ldif}", String::from_utf8_lossy(&output.stderr));
    }

    /// Adds entries (LDIF).
    pub fn add(&self, ldif: &str) {
        self.tool(LDAPADD, ldif);
    }

    /// Applies changes (LDIF with `changetype`).
    pub fn modify(&self, ldif: &str) {
        self.tool(LDAPMODIFY, ldif);
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A person entry as AD keeps it: login, UPN, display name, manager's DN, Discord id.
pub fn person(login: &str, name: &str, manager: Option<&str>, discord_id: Option<&str>) -> String {
    let mut ldif = format!(
        "dn: cn={login},ou=People,{SUFFIX}\nobjectClass: inetOrgPerson\nobjectClass: vouchTestAdUser\n\
         cn: {login}\nsn: {name}\ndisplayName: {name}\nsAMAccountName: {login}\nuserPrincipalName: {login}@corp.example\n"
    );
    if let Some(manager) = manager {
        ldif.push_str(&format!("manager: cn={manager},ou=People,{SUFFIX}\n"));
    }
    if let Some(discord_id) = discord_id {
        ldif.push_str(&format!("extensionAttribute1: {discord_id}\n"));
    }
    ldif.push('\n');
    ldif
}

/// A computer entry under `ou` (`Workstations` or `Servers`), managed by a person.
pub fn computer(name: &str, ou: &str, managed_by: Option<&str>) -> String {
    let mut ldif = format!(
        "dn: cn={name},ou={ou},{SUFFIX}\nobjectClass: computer\ncn: {name}\ndNSHostName: {name}.corp.example\n"
    );
    if let Some(owner) = managed_by {
        ldif.push_str(&format!("managedBy: cn={owner},ou=People,{SUFFIX}\n"));
    }
    ldif.push('\n');
    ldif
}

/// The `[[directory.sources]]` table that reads this server as Active Directory would be read.
pub fn source_settings(slapd: &Slapd) -> String {
    format!(
        "[[directory.sources]]\nname = \"corp-ad\"\nkind = \"ldap\"\nurl = \"{url}\"\n\
         bind_dn = \"{ADMIN_DN}\"\nbind_password = {{ env = \"VOUCH_LDAP_PASSWORD\" }}\nbase_dn = \"{SUFFIX}\"\n\
         people_filter = \"(objectClass=inetOrgPerson)\"\ncomputers_filter = \"(objectClass=computer)\"\n\
         groups_filter = \"(objectClass=groupOfNames)\"\ndiscord_id_attribute = \"extensionAttribute1\"\n\
         service_account_ous = [\"ou=Service Accounts,{SUFFIX}\"]\npage_size = 2\nchange_attribute = \"entryCSN\"\n\
         [directory.sources.roles]\n\"cn=Helpdesk,ou=Groups,{SUFFIX}\" = \"helpdesk\"\n\
         [[directory.sources.computers]]\nunder = \"ou=Workstations,{SUFFIX}\"\nkind = \"workstation\"\ncriticality = \"low\"\n\
         [[directory.sources.computers]]\nunder = \"ou=Servers,{SUFFIX}\"\nkind = \"server\"\ncriticality = \"high\"\n",
        url = slapd.url()
    )
}
