//! The GX scripts (scripts/venus/: install.sh, reapply.sh, uninstall.sh), as
//! `scripts/package --stage` bundles them, run for real against a scratch root that
//! mimics a Venus OS GX: /data with an rc.local and another driver's serial-starter file
//! (dbus-serialbattery's `sbattery` in the aliases), the stock /etc/venus/serial-starter.conf
//! and udev rules, /opt/victronenergy with service templates and a stand-in for the
//! remount helper, /service, /var/log -> /data/log, and a read-only marker (a `/proc/mounts`
//! whose `/` is `ro`, which the helper flips to `rw`).
//!
//! The scripts run under busybox's sh with busybox's applets first in PATH (Venus's
//! userland) when busybox is installed (scripts/test installs it), else under the host's
//! sh. A fake `uname` first in PATH plays the GX's architecture.
//!
//! Also here: serial-starter's own template substitution, run against the simulator on a
//! pseudo-terminal and a private bus; scripts/deploy's argument handling; and (ignored
//! unless asked, as it builds two cross targets) scripts/package from a fresh clone.
#![cfg(all(feature = "serial", feature = "dbus", feature = "cli"))]

#[path = "support/require.rs"]
mod require;
#[path = "support/rig.rs"]
mod rig;

use pzem::Model;
use pzem::dbus::Value;
use pzem::sim::{Pacing, SimBus, SimMeter, SimServer};
use rig::{Proc, Rig, TempDir, service_name};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const PZEM_DBUS: &str = env!("CARGO_BIN_EXE_pzem-dbus");
const FIXED: [&str; 3] = ["pzem-energy", "pzem-logger", "pzem-web"];
const SECOND: Duration = Duration::from_secs(1);

// --- the scratch GX -------------------------------------------------------------------

const STOCK_SERIAL_STARTER: &str = "\
# /etc/venus/serial-starter.conf (stock, abridged)
service cgwacs          dbus-cgwacs
service gps             gps-dbus
service vedirect        vedirect-interface
service modbus          dbus-modbus-client.serial
alias   default         gps:vedirect
alias   rs485           cgwacs:fzsonick:imt:modbus
include /data/conf/serial-starter.d
";
const SERIALBATTERY_CONF: &str = "\
service sbattery        dbus-serialbattery
alias   default         gps:vedirect:sbattery
alias   rs485           cgwacs:fzsonick:imt:modbus:sbattery
";
const RC_LOCAL: &str = "\
#!/bin/sh
# another driver's boot hook
[ -x /data/etc/dbus-serialbattery/reinstall-local.sh ] && bash /data/etc/dbus-serialbattery/reinstall-local.sh
exit 0
";
const STOCK_UDEV: &str = "ACTION==\"add\", SUBSYSTEM==\"tty\", SYMLINK+=\"serial-starter/%k\"\n";
/// The remount helper's stand-in: flips the read-only marker and counts its calls.
const REMOUNT_HELPER: &str = "\
#!/bin/sh
r=$(cd \"$(dirname \"$0\")/../../..\" && pwd)
sed -i 's/ ro,/ rw,/' \"$r/proc/mounts\"
echo remount >>\"$r/remount.log\"
";
/// The stand-in for Venus's run-service.sh, with the interface every serial driver's start
/// script uses (venus-conventions.md §6.3): `$tty` from `$1`, and `start ARGS` runs `$app`.
const RUN_SERVICE: &str = "\
tty=${1#/dev/}
start() {
    echo \"run-service: start $app $*\" >&2
    exec \"$app\" \"$@\"
}
";

fn write(path: &Path, text: &str, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The parts of a GX a firmware update replaces (rootfs, and the /service tmpfs), stock.
fn stock_rootfs(root: &Path) {
    write(
        &root.join("opt/victronenergy/service-templates/gps-dbus/run"),
        "#!/bin/sh\nexec 2>&1\nexec /opt/victronenergy/gps-dbus/gps_dbus -s /dev/TTY\n",
        0o755,
    );
    write(
        &root.join("opt/victronenergy/swupdate-scripts/remount-rw.sh"),
        REMOUNT_HELPER,
        0o755,
    );
    write(&root.join("etc/venus/serial-starter.conf"), STOCK_SERIAL_STARTER, 0o644);
    write(&root.join("etc/udev/rules.d/serial-starter.rules"), STOCK_UDEV, 0o644);
    write(
        &root.join("service/serial-starter/run"),
        "#!/bin/sh\nexec /opt/victronenergy/serial-starter/serial-starter.sh\n",
        0o755,
    );
    fs::create_dir_all(root.join("var/volatile/services")).unwrap();
    symlink("../data/log", root.join("var/log")).unwrap();
    // The read-only marker.
    write(&root.join("proc/mounts"), "/dev/root / ext4 ro,relatime 0 0\n", 0o644);
}

/// What a firmware update does to the scratch GX: the rootfs parts replaced by stock ones.
fn firmware_update(root: &Path) {
    for dir in ["opt", "etc", "service", "var", "proc"] {
        fs::remove_dir_all(root.join(dir)).unwrap();
    }
    stock_rootfs(root);
}

/// Where the scripts run: busybox's sh and applets when there is a busybox.
fn busybox() -> Option<PathBuf> {
    let out = Command::new("busybox").arg("--list").output().ok()?;
    out.status.success().then(|| which("busybox"))
}

/// A scratch GX with a bundle to install.
struct Gx {
    dir: TempDir,
    busybox: bool,
}

impl Gx {
    /// A GX with `/data`: an rc.local (unless `rc_local` is false) and dbus-serialbattery's
    /// serial-starter file; the bundle staged from the native binaries; `uname` says armv7l.
    fn new(tag: &str, rc_local: bool) -> Gx {
        let dir = TempDir::new(tag);
        let mut gx = Gx { busybox: false, dir };
        let root = gx.root();
        stock_rootfs(&root);
        write(
            &root.join("data/conf/serial-starter.d/dbus-serialbattery.conf"),
            SERIALBATTERY_CONF,
            0o644,
        );
        fs::create_dir_all(root.join("data/log")).unwrap();
        if rc_local {
            write(&root.join("data/rc.local"), RC_LOCAL, 0o755);
        }
        let bins = Path::new(PZEM_DBUS).parent().unwrap();
        let out = Command::new(Path::new(REPO).join("scripts/package"))
            .arg("--stage")
            .arg(gx.bundle())
            .args(["--arch", "armv7", "--binaries"])
            .arg(bins)
            .output()
            .unwrap();
        assert!(out.status.success(), "scripts/package --stage: {}", text(&out));
        gx.set_uname("armv7l");
        if let Some(bb) = busybox() {
            let dir = gx.dir.path().join("busybox");
            fs::create_dir_all(&dir).unwrap();
            let list = Command::new(&bb).arg("--list").output().unwrap();
            for applet in String::from_utf8_lossy(&list.stdout).lines() {
                if applet != "uname" && !applet.is_empty() {
                    symlink(&bb, dir.join(applet)).unwrap();
                }
            }
            gx.busybox = true;
        } else {
            require::require_or_skip(
                "busybox is not installed: the GX scripts run under the host's sh and tools, not as on Venus",
                "install with: apt-get install busybox",
            );
        }
        gx
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    fn r(&self) -> String {
        self.root().to_str().unwrap().to_owned()
    }

    fn set_uname(&self, machine: &str) {
        write(
            &self.dir.path().join("fake/uname"),
            &format!("#!/bin/sh\necho {machine}\n"),
            0o755,
        );
    }

    /// PATH for the scripts: the fake uname, busybox's applets, then the host's.
    fn path(&self) -> String {
        format!(
            "{}:{}:{}",
            self.dir.path().join("fake").display(),
            self.dir.path().join("busybox").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// Runs `sh SCRIPT ARGS` as the GX would.
    fn sh(&self, script: &Path, args: &[&str]) -> Output {
        let mut cmd = if self.busybox {
            let mut c = Command::new("busybox");
            c.arg("sh");
            c
        } else {
            Command::new("sh")
        };
        cmd.arg(script)
            .args(args)
            .env("PATH", self.path())
            .env_remove("ROOT")
            .output()
            .unwrap()
    }

    fn install(&self) -> Output {
        self.sh(&self.bundle().join("install.sh"), &["--root", &self.r()])
    }

    fn uninstall(&self, extra: &[&str]) -> Output {
        let r = self.r();
        let mut args = vec!["--root", r.as_str()];
        args.extend_from_slice(extra);
        self.sh(&self.root().join("data/pzem-venus/uninstall.sh"), &args)
    }

    /// Replaces every binary of the bundle by a tripwire that records being run, adds
    /// `add` as tripwires too and removes `remove`.
    fn tripwire_bins(&self, add: &[&str], remove: &[&str]) -> PathBuf {
        let marker = self.dir.path().join("a-bundled-binary-ran");
        let tripwire = format!("#!/bin/sh\necho \"$0 $*\" >>{}\n", marker.display());
        let bin = self.bundle().join("bin");
        let mut names: Vec<String> = fs::read_dir(&bin)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.extend(add.iter().map(|s| s.to_string()));
        for name in names {
            if remove.contains(&name.as_str()) {
                let _ = fs::remove_file(bin.join(&name));
            } else {
                write(&bin.join(&name), &tripwire, 0o755);
            }
        }
        for name in remove {
            let _ = fs::remove_file(bin.join(name));
        }
        marker
    }
}

fn which(program: &str) -> PathBuf {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is not in PATH"))
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed: {}", text(&out));
    text(&out)
}

// --- tree snapshots ---------------------------------------------------------------------

/// Every path under `root` with its kind, mode, content (or link target) and, with
/// `times`, its modification time to the nanosecond.
fn snapshot(root: &Path, times: bool) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, times: bool, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for p in entries {
            let meta = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let time = if times {
                format!(" mtime {}.{:09}", meta.mtime(), meta.mtime_nsec())
            } else {
                String::new()
            };
            let mode = meta.permissions().mode() & 0o7777;
            let desc = if meta.file_type().is_symlink() {
                format!("link -> {}", fs::read_link(&p).unwrap().display())
            } else if meta.is_dir() {
                walk(root, &p, times, out);
                format!("dir {mode:o}{time}")
            } else {
                let bytes = fs::read(&p).unwrap();
                let content = match std::str::from_utf8(&bytes) {
                    Ok(t) if bytes.len() <= 4096 => format!("{t:?}"),
                    _ => format!("{} bytes, fnv {:016x}", bytes.len(), fnv(&bytes)),
                };
                format!("file {mode:o}{time} {content}")
            };
            out.insert(rel, desc);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, times, &mut out);
    out
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// The paths whose entries differ between two snapshots, with both sides.
fn differences(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}:\n    before {:?}\n    after  {:?}", a.get(k), b.get(k)))
        .collect()
}

fn assert_same(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>, what: &str) {
    let d = differences(a, b);
    assert!(d.is_empty(), "{what}: {} paths differ:\n{}", d.len(), d.join("\n"));
}

fn without(mut s: BTreeMap<String, String>, prefixes: &[&str]) -> BTreeMap<String, String> {
    s.retain(|k, _| !prefixes.iter().any(|p| k == p || k.starts_with(&format!("{p}/"))));
    s
}

// --- serial-starter, as its own shell code does it ----------------------------------------

/// The aliases serial-starter ends up with: its config file and the includes, in load
/// order, a later definition replacing an earlier one (serial-starter.sh `load_config`).
fn serial_starter_aliases(root: &Path) -> BTreeMap<String, String> {
    fn load(root: &Path, file: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(text) = fs::read_to_string(file) else { return };
        for line in text.lines() {
            let line = line.split('#').next().unwrap();
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["alias", name, value, ..] => {
                    out.insert(name.to_string(), value.to_string());
                }
                ["include", name, ..] => {
                    let p = root.join(name.trim_start_matches('/'));
                    if p.is_dir() {
                        let mut files: Vec<PathBuf> = fs::read_dir(&p)
                            .unwrap()
                            .map(|e| e.unwrap().path())
                            .filter(|f| f.extension().is_some_and(|x| x == "conf"))
                            .collect();
                        files.sort();
                        for f in files {
                            load(root, &f, out);
                        }
                    } else {
                        load(root, &p, out);
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = BTreeMap::new();
    load(root, &root.join("etc/venus/serial-starter.conf"), &mut out);
    out
}

/// serial-starter's `create_service` for `tty`: copy the template, then
/// `sed -i "s:TTY:$TTY:"` on run and log/run (the first TTY of each line) and the
/// PRODUCT substitution on run. Returns the service directory.
fn serial_starter_instance(gx: &Gx, tty: &str, product: &str) -> PathBuf {
    let template = gx.root().join("opt/victronenergy/service-templates/pzem-dbus");
    let service = gx
        .root()
        .join("var/volatile/services")
        .join(format!("pzem-dbus.{}", tty.replace('/', "")));
    let _ = fs::remove_dir_all(&service);
    let out = Command::new("cp")
        .arg("-a")
        .arg(&template)
        .arg(&service)
        .output()
        .unwrap();
    ok(out, "cp -a template");
    let sed = |expr: String, file: &str| {
        let out = Command::new("sed")
            .arg("-i")
            .arg(expr)
            .arg(service.join(file))
            .env("PATH", gx.path())
            .output()
            .unwrap();
        ok(out, "sed");
    };
    sed(format!("s:TTY:{tty}:"), "run");
    sed(format!("s:TTY:{tty}:"), "log/run");
    let before = read(&service.join("run"));
    sed(format!("s:PRODUCT\\(=[^ ]*\\)*:PRODUCT={product}:"), "run");
    assert_eq!(
        read(&service.join("run")),
        before,
        "the PRODUCT substitution changed run"
    );
    service
}

// --- the tests -----------------------------------------------------------------------------

#[test]
fn install_reinstall_firmware_update_uninstall_on_a_scratch_gx() {
    let gx = Gx::new("gx", true);
    let root = gx.root();
    let r = gx.r();
    // The owner's config and history exist already; the bundle has pzem-energy and
    // pzem-logger but no pzem-web, and every binary is a tripwire.
    // It has a port's own meters section, which the installer's reading of [install] must
    // pass over as pzem-dbus's.
    let conf = "# mine\n1 016 grid\n2 017 dcsource\n\n[install]\npzem-energy = yes\npzem-logger = no\n\
                pzem-web = yes\npin-adapter = A10K3x9\n\n[meters A10K3x9]\ninterval-ms = 500\n\
                1 017 dcsystem Battery bank\n\n[energy]\nac-in = com.victronenergy.grid.pzem_ttyUSB0_1\n";
    write(&root.join("data/conf/pzem.conf"), conf, 0o600);
    write(
        &root.join("data/var/lib/pzem-venus/pzem_ttyUSB0_1.energy"),
        "12345\n",
        0o644,
    );
    let ran = gx.tripwire_bins(&["pzem-energy", "pzem-logger"], &["pzem-web"]);
    let before = snapshot(&root, false);

    // 1. install
    let out = ok(gx.install(), "install");
    assert!(out.contains("read-only"), "{out}");
    assert_eq!(
        read(&root.join("remount.log")),
        "remount\n",
        "the remount helper runs once"
    );
    assert!(read(&root.join("proc/mounts")).contains(" rw,"));
    assert!(
        out.contains("pzem-web = yes") && out.contains("no pzem-web binary: it is not started"),
        "{out}"
    );

    let pv = root.join("data/pzem-venus");
    let mut bins: Vec<String> = fs::read_dir(pv.join("bin"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    bins.sort();
    let mut want: Vec<String> = fs::read_dir(gx.bundle().join("bin"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    want.sort();
    assert_eq!(bins, want);
    for b in &bins {
        assert_eq!(mode(&pv.join("bin").join(b)), 0o755, "{b}");
    }

    // The serial-starter template: the run script is pzem-dbus -d /dev/TTY with the config,
    // the log script multilog into /var/log/pzem-dbus.TTY; no line has TTY twice, and
    // nothing is PRODUCT.
    let template = root.join("opt/victronenergy/service-templates/pzem-dbus");
    let run = read(&template.join("run"));
    assert!(run.starts_with("#!/bin/sh\n"), "{run}");
    assert!(
        run.contains(&format!(
            "exec \"$app\" -d /dev/TTY -c {r}/data/conf/pzem.conf --state-dir {r}/data/var/lib/pzem-venus\n"
        )),
        "{run}"
    );
    assert!(
        run.contains(&format!("app={r}/data/pzem-venus/bin/pzem-dbus\n")),
        "{run}"
    );
    assert!(run.lines().all(|l| l.matches("TTY").count() <= 1), "{run}");
    assert!(!run.contains("PRODUCT") && !run.contains("@ROOT@"), "{run}");
    assert_eq!(
        read(&template.join("log/run")),
        format!("#!/bin/sh\nexec 2>&1\nexec multilog t s25000 n4 {r}/var/log/pzem-dbus.TTY\n")
    );
    assert_eq!(
        (mode(&template.join("run")), mode(&template.join("log/run"))),
        (0o755, 0o755)
    );

    // serial-starter.d: ours merged; dbus-serialbattery's untouched; what serial-starter
    // ends up with keeps sbattery and adds pzem.
    let ss = read(&root.join("data/conf/serial-starter.d/pzem.conf"));
    let lines: Vec<&str> = ss.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "service pzem pzem-dbus",
            "alias default gps:vedirect:sbattery:pzem",
            "alias rs485 cgwacs:fzsonick:imt:modbus:sbattery:pzem"
        ]
    );
    assert_eq!(
        read(&root.join("data/conf/serial-starter.d/dbus-serialbattery.conf")),
        SERIALBATTERY_CONF
    );
    let aliases = serial_starter_aliases(&root);
    assert_eq!(aliases["default"], "gps:vedirect:sbattery:pzem");
    assert_eq!(aliases["rs485"], "cgwacs:fzsonick:imt:modbus:sbattery:pzem");

    // rc.local: one line of ours, before the closing exit; the rest as it was.
    let rc = read(&root.join("data/rc.local"));
    let line = format!(
        "[ -x {r}/data/pzem-venus/reapply.sh ] && {r}/data/pzem-venus/reapply.sh --boot --root {r} # pzem-venus"
    );
    let mut expected: Vec<&str> = RC_LOCAL.lines().collect();
    expected.insert(3, &line);
    assert_eq!(rc.lines().collect::<Vec<_>>(), expected);
    assert_eq!(rc.lines().filter(|l| l.contains("pzem-venus")).count(), 1);
    assert_eq!(mode(&root.join("data/rc.local")), 0o755);

    // The fixed services: installed when the bundle has the binary (even when disabled),
    // linked into /service when enabled.
    let svc = |n: &str| pv.join("service").join(n);
    assert_eq!(
        fs::read_link(root.join("service/pzem-energy")).unwrap(),
        svc("pzem-energy")
    );
    assert!(svc("pzem-logger/run").is_file() && !root.join("service/pzem-logger").exists());
    assert!(!svc("pzem-web").exists() && fs::symlink_metadata(root.join("service/pzem-web")).is_err());
    assert_eq!(
        read(&svc("pzem-energy/run")).lines().last().unwrap(),
        format!("exec {r}/data/pzem-venus/bin/pzem-energy -c {r}/data/conf/pzem.conf")
    );
    assert_eq!(
        read(&svc("pzem-logger/log/run")).lines().last().unwrap(),
        format!("exec multilog t s25000 n4 {r}/var/log/pzem-logger")
    );

    // The udev pin.
    let udev = read(&root.join("etc/udev/rules.d/zz-pzem-venus.rules"));
    assert!(
        udev.lines()
            .any(|l| l == "ACTION==\"add\", SUBSYSTEM==\"tty\", ATTRS{serial}==\"A10K3x9\", ENV{VE_SERVICE}=\"pzem\""),
        "{udev}"
    );

    // The owner's config is kept as it was, byte for byte and mode.
    assert_eq!(read(&root.join("data/conf/pzem.conf")), conf);
    assert_eq!(mode(&root.join("data/conf/pzem.conf")), 0o600);

    // Nothing else outside /data/pzem-venus changed.
    let after1 = snapshot(&root, false);
    let ours = [
        "data/pzem-venus",
        "opt/victronenergy/service-templates/pzem-dbus",
        "etc/udev/rules.d/zz-pzem-venus.rules",
        "service/pzem-energy",
        "data/conf/serial-starter.d/pzem.conf",
        "data/rc.local",
        "remount.log",
        "proc/mounts",
    ];
    assert_same(
        &without(before.clone(), &ours),
        &without(after1, &ours),
        "install outside its own paths",
    );

    // 2. install again: no change at all, byte for byte, modes and modification times.
    let snap1 = snapshot(&root, true);
    std::thread::sleep(Duration::from_millis(20));
    let out = ok(gx.install(), "second install");
    assert!(!out.contains("written") && !out.contains("updated"), "{out}");
    assert_same(&snap1, &snapshot(&root, true), "the second install");

    // 3. a firmware update wipes the rootfs parts; rc.local at the next boot restores them.
    firmware_update(&root);
    assert!(!template.exists() && !root.join("etc/udev/rules.d/zz-pzem-venus.rules").exists());
    assert!(fs::symlink_metadata(root.join("service/pzem-energy")).is_err());
    let out = Command::new(root.join("data/rc.local"))
        .env("PATH", gx.path())
        .output()
        .unwrap();
    ok(out, "rc.local");
    let log = read(&pv.join("reapply.log"));
    assert!(log.contains("pzem-venus: done") && log.contains("read-only"), "{log}");
    assert_eq!(read(&root.join("remount.log")), "remount\nremount\n");
    let restored = without(snapshot(&root, false), &["data/pzem-venus/reapply.log", "remount.log"]);
    let installed = without(
        snap1.iter().map(|(k, v)| (k.clone(), strip_time(v))).collect(),
        &["remount.log"],
    );
    assert_same(&installed, &restored, "after the firmware update and rc.local");

    // 3b. The same boot with reapply.sh under busybox's sh and applets, as on Venus (the
    // rc.local above starts it through its #!/bin/sh, which is the host's shell here).
    firmware_update(&root);
    ok(
        gx.sh(&pv.join("reapply.sh"), &["--boot", "--root", &r]),
        "reapply.sh --boot",
    );
    let log = read(&pv.join("reapply.log"));
    assert!(log.contains("pzem-venus: done") && log.contains("read-only"), "{log}");
    let restored = without(snapshot(&root, false), &["data/pzem-venus/reapply.log", "remount.log"]);
    assert_same(
        &installed,
        &restored,
        "after a second firmware update and reapply.sh --boot",
    );

    // 4. uninstall, with what the running system would have added: serial-starter's
    // instance of the template and its link, and the logs.
    fs::create_dir_all(root.join("var/volatile/services/pzem-dbus.ttyUSB0/log")).unwrap();
    symlink(
        root.join("var/volatile/services/pzem-dbus.ttyUSB0"),
        root.join("service/pzem-dbus.ttyUSB0"),
    )
    .unwrap();
    for log in ["pzem-dbus.ttyUSB0", "pzem-energy"] {
        write(&root.join("var/log").join(log).join("current"), "@4000 x\n", 0o644);
    }
    let out = ok(gx.uninstall(&[]), "uninstall");
    assert!(out.contains("kept") && out.contains("pzem.conf"), "{out}");
    // Exactly the tree before the install (config and history kept), but for the
    // remount helper's traces.
    let marks = ["remount.log", "proc/mounts"];
    assert_same(
        &without(before.clone(), &marks),
        &without(snapshot(&root, false), &marks),
        "uninstall",
    );
    assert_eq!(read(&root.join("data/rc.local")), RC_LOCAL);

    // --purge also removes the config and the history.
    ok(gx.install(), "install before purge");
    ok(gx.uninstall(&["--purge"]), "uninstall --purge");
    let gone = ["data/conf/pzem.conf", "data/var/lib/pzem-venus"];
    assert_same(
        &without(before, &[&marks[..], &gone[..]].concat()),
        &without(snapshot(&root, false), &marks),
        "uninstall --purge",
    );
    assert!(!root.join("data/var/lib/pzem-venus").exists());

    assert!(!ran.exists(), "a bundled binary was run: {}", read(&ran));
}

fn strip_time(desc: &str) -> String {
    match desc.find(" mtime ") {
        Some(i) => {
            let rest = &desc[i + 7..];
            let end = rest.find(' ').map_or(desc.len(), |j| i + 7 + j);
            format!("{}{}", &desc[..i], &desc[end..])
        }
        None => desc.to_owned(),
    }
}

#[test]
fn a_fresh_gx_gets_an_rc_local_and_the_commented_example_and_loses_them_cleanly() {
    let gx = Gx::new("fresh", false);
    let root = gx.root();
    let r = gx.r();
    let ran = gx.tripwire_bins(&[], &[]);
    let before = snapshot(&root, false);
    let out = ok(gx.install(), "install");
    assert!(out.contains("created") && out.contains("rc.local"), "{out}");

    // rc.local did not exist: created with a shebang, our one line, and the run bit.
    assert_eq!(
        read(&root.join("data/rc.local")),
        format!(
            "#!/bin/sh\n[ -x {r}/data/pzem-venus/reapply.sh ] && {r}/data/pzem-venus/reapply.sh --boot --root {r} # pzem-venus\n"
        )
    );
    assert_eq!(mode(&root.join("data/rc.local")), 0o755);
    // The config is the commented example: nothing enabled, no pin; its only active lines
    // are the [install] section (pzem-dbus refuses a file with neither meters nor sections).
    let conf = root.join("data/conf/pzem.conf");
    assert_eq!(
        read(&conf),
        read(&Path::new(REPO).join("scripts/venus/pzem.conf.example"))
    );
    assert_eq!(mode(&conf), 0o644);
    let active: Vec<String> = read(&conf)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        active,
        ["[install]", "pzem-energy = no", "pzem-logger = no", "pzem-web = no"]
    );
    for name in FIXED {
        assert!(fs::symlink_metadata(root.join("service").join(name)).is_err(), "{name}");
        // Installed (not enabled) exactly when the bundle has the binary.
        assert_eq!(
            root.join("data/pzem-venus/service").join(name).join("run").is_file(),
            gx.bundle().join("bin").join(name).is_file(),
            "{name}"
        );
    }
    assert!(!root.join("etc/udev/rules.d/zz-pzem-venus.rules").exists());

    // Enabling a service afterwards: edit [install], run reapply.sh by hand.
    let text = read(&conf).replace("pzem-logger = no", "pzem-logger = yes");
    fs::write(&conf, &text).unwrap();
    let out = ok(
        gx.sh(&root.join("data/pzem-venus/reapply.sh"), &["--root", &r]),
        "reapply",
    );
    let logger_present = gx.bundle().join("bin/pzem-logger").is_file();
    assert_eq!(
        fs::symlink_metadata(root.join("service/pzem-logger")).is_ok(),
        logger_present,
        "{out}"
    );
    if !logger_present {
        assert!(out.contains("no pzem-logger binary: it is not started"), "{out}");
    }

    // Uninstall: rc.local was ours, so it goes; the config stays.
    ok(gx.uninstall(&[]), "uninstall");
    assert!(!root.join("data/rc.local").exists());
    assert_eq!(read(&conf), text);
    let marks = ["remount.log", "proc/mounts", "data/conf/pzem.conf"];
    assert_same(
        &without(before, &marks),
        &without(snapshot(&root, false), &marks),
        "uninstall of a fresh install",
    );
    assert!(!ran.exists(), "a bundled binary was run: {}", read(&ran));
}

#[test]
fn the_wrong_architecture_is_refused_and_nothing_is_written() {
    let gx = Gx::new("arch", true);
    let root = gx.root();
    let ran = gx.tripwire_bins(&[], &[]);
    let before = snapshot(&root, true);
    let other_bundle = format!(
        "install pzem-venus-{}-aarch64.tar.gz instead",
        env!("CARGO_PKG_VERSION")
    );
    for (machine, says) in [
        ("x86_64", "runs on Venus OS GX devices"),
        ("aarch64", other_bundle.as_str()),
        ("armv6l", "runs on Venus OS GX devices"),
    ] {
        gx.set_uname(machine);
        let out = gx.install();
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{machine}: {t}");
        assert!(
            t.contains("this bundle holds armv7 binaries")
                && t.contains(&format!("reports '{machine}' (uname -m)"))
                && t.contains(says)
                && t.contains("Nothing was changed"),
            "{machine}: {t}"
        );
        assert_same(&before, &snapshot(&root, true), machine);
    }
    // A 64-bit kernel over an armhf userland runs the armv7 binaries.
    write(&root.join("lib/ld-linux-armhf.so.3"), "", 0o755);
    gx.set_uname("aarch64");
    ok(gx.install(), "armv7 bundle on an aarch64 kernel with an armhf userland");
    assert!(!ran.exists(), "a bundled binary was run: {}", read(&ran));
}

#[test]
fn a_bad_install_section_stops_the_install_and_the_boot_starts_nothing_half_configured() {
    let gx = Gx::new("badconf", true);
    let root = gx.root();
    let conf = root.join("data/conf/pzem.conf");
    gx.tripwire_bins(&["pzem-energy"], &[]);
    for (bad, says) in [
        (
            "[install]\npzem-energy = maybe\n",
            "line 2: pzem-energy = maybe: write pzem-energy = yes or pzem-energy = no",
        ),
        (
            "1 016 grid\n[install\n",
            "line 2: '[install' is not a section header; write it as [name]",
        ),
        (
            "[install]\npzem-enrgy = yes\n",
            "line 2: unknown key 'pzem-enrgy' in [install]; the keys are",
        ),
        (
            "[install]\npin-adapter = A1\"\n",
            "line 2: pin-adapter: 'A1\"' is not a USB serial number",
        ),
        (
            "[install]\npzem-web = no\n[install]\n",
            "line 3: a second [install] section (the first is on line 1)",
        ),
    ] {
        write(&conf, bad, 0o644);
        let before = snapshot(&root, true);
        let out = gx.install();
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{t}");
        assert!(t.contains(&format!("pzem.conf: {says}")), "{says}: {t}");
        assert!(t.contains("nothing was installed"), "{t}");
        assert_same(&before, &snapshot(&root, true), says);
    }

    // Installed with pzem-energy enabled, then the section breaks and a firmware update
    // comes: the boot restores pzem-dbus under serial-starter, starts no fixed service,
    // and the boot log names the line.
    write(&conf, "[install]\npzem-energy = yes\n", 0o644);
    ok(gx.install(), "install");
    assert!(fs::symlink_metadata(root.join("service/pzem-energy")).is_ok());
    write(&conf, "[install]\npzem-energy = yes\npzem-energy = no\n", 0o644);
    firmware_update(&root);
    ok(
        Command::new(root.join("data/rc.local"))
            .env("PATH", gx.path())
            .output()
            .unwrap(),
        "rc.local",
    );
    assert!(root.join("opt/victronenergy/service-templates/pzem-dbus/run").is_file());
    assert!(fs::symlink_metadata(root.join("service/pzem-energy")).is_err());
    let log = read(&root.join("data/pzem-venus/reapply.log"));
    assert!(
        log.contains("line 3: 'pzem-energy' is given twice in [install]") && log.contains("FAILED"),
        "{log}"
    );
}

/// serial-starter's `start_service` for the pty: its substitution of the installed
/// template, then the run script started as supervise would, with the system bus
/// pointed at a private one. pzem-dbus must find the simulated meter (the installed
/// example config has no meter lines, only the [install] section: discovery) and publish it.
#[test]
fn serial_starter_runs_the_installed_template_against_the_simulator() {
    let gx = Gx::new("tty", true);
    let root = gx.root();
    ok(gx.install(), "install");
    // The installed binary is the freshly built native pzem-dbus.
    assert_eq!(
        fs::read(root.join("data/pzem-venus/bin/pzem-dbus")).unwrap(),
        fs::read(PZEM_DBUS).unwrap()
    );
    let mut meter = SimMeter::new(Model::Pzem016, 1);
    meter.set_energy_wh(4_321);
    let sim = SimServer::pty(SimBus::new(vec![meter], 5), Pacing::NONE).unwrap();
    let path = sim.path().unwrap().to_owned();
    // serial-starter's TTY is the name under /dev: "pts/N" here, "ttyUSB0" on a GX.
    let tty = path.strip_prefix("/dev/").unwrap().to_owned();
    let service = serial_starter_instance(&gx, &tty, "FT232R_USB_UART");
    let run = read(&service.join("run"));
    assert!(run.contains(&format!("set -- {tty}\n")), "{run}");
    assert!(run.contains(&format!("-d /dev/{tty} -c ")), "{run}");
    assert!(!run.contains("TTY"), "{run}");
    assert_eq!(
        read(&service.join("log/run")).lines().last().unwrap(),
        format!("exec multilog t s25000 n4 {}/var/log/pzem-dbus.{tty}", gx.r())
    );

    let mut rig = Rig::new(true);
    let name = service_name("grid", &path, 1);
    let state = root.join("data/var/lib/pzem-venus");
    for with_helper in [false, true] {
        let helper = root.join("opt/victronenergy/serial-starter/run-service.sh");
        if with_helper {
            write(&helper, RUN_SERVICE, 0o644);
        }
        let log = gx.dir.path().join(format!("run-{with_helper}.log"));
        let mut p = Proc::spawn(
            "env",
            &[
                format!("DBUS_SYSTEM_BUS_ADDRESS={}", rig.bus.address()),
                format!("PATH={}", gx.path()),
                "sh".into(),
                service.join("run").to_str().unwrap().into(),
            ],
            &log,
        );
        rig.monitor.until(20 * SECOND, &format!("{name} connected"), |m| {
            m.get(&name, "/Connected") == Some(&Value::Int(1)) || p.try_exit().is_some()
        });
        assert_eq!(p.try_exit(), None, "the run script ended: {}", p.log_text());
        let voltage = rig.monitor.get(&name, "/Ac/L1/Voltage");
        assert!(matches!(voltage, Some(Value::Double(v)) if *v > 100.0), "{voltage:?}");
        // kWh from the meter's 4321 Wh (and what it counted since), not Wh.
        rig.monitor.until(
            5 * SECOND,
            "the energy in kWh",
            |m| matches!(m.get(&name, "/Ac/Energy/Forward"), Some(Value::Double(e)) if (4.321..4.4).contains(e)),
        );
        assert_eq!(
            rig.monitor.get(&name, "/Mgmt/Connection"),
            Some(&Value::Str(format!("Modbus RTU {tty}:1")))
        );
        // The installed example config (no meter lines) made it scan the line; the state
        // directory is the installed one, under the root.
        let out = p.log_text();
        assert!(out.contains(&format!("scan of {path}: PZEM AC meter at 1")), "{out}");
        assert_eq!(out.contains("run-service: start"), with_helper, "{out}");
        assert_eq!(p.terminate(), Some(0), "{}", p.log_text());
        let remembered: Vec<_> = fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".discovered"))
            .collect();
        assert_eq!(remembered.len(), 1, "{remembered:?}");
        // The service is gone once it stopped.
        rig.monitor
            .until(5 * SECOND, "the service gone", |m| !m.view.contains_key(&name));
    }
}

/// The log script, substituted for ttyUSB0, runs the real multilog (when daemontools is
/// installed; scripts/test installs it) and keeps tai64n-stamped lines where
/// `tail -F /var/log/pzem-dbus.ttyUSB0/current | tai64nlocal` finds them.
#[test]
fn the_log_script_keeps_tai64n_lines_in_var_log() {
    if Command::new("multilog")
        .arg("t")
        .stdin(std::process::Stdio::null())
        .output()
        .is_err()
    {
        require::require_or_skip(
            "multilog is not installed: the log script test did not run",
            "install with: apt-get install daemontools",
        );
        return;
    }
    let gx = Gx::new("log", true);
    ok(gx.install(), "install");
    let service = serial_starter_instance(&gx, "ttyUSB0", "FT232R_USB_UART");
    let mut child = Command::new("sh")
        .arg(service.join("log/run"))
        .env("PATH", gx.path())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"pzem-dbus: published com.victronenergy.grid.pzem_ttyUSB0_1\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let current = read(&gx.root().join("data/log/pzem-dbus.ttyUSB0/current"));
    let line = current.lines().next().unwrap();
    assert!(
        line.starts_with("@4000") && line.ends_with(" pzem-dbus: published com.victronenergy.grid.pzem_ttyUSB0_1"),
        "{current}"
    );
    assert_eq!(
        line.find(' '),
        Some(25),
        "a tai64n stamp is @ and 24 hex digits: {line}"
    );
}

/// scripts/deploy cannot reach a GX here; its arguments and the commands it would run can
/// be checked.
#[test]
fn deploy_checks_its_arguments_and_prints_its_commands() {
    let deploy = Path::new(REPO).join("scripts/deploy");
    let run = |args: &[&str]| Command::new(&deploy).args(args).output().unwrap();
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("[USER@]HOST"), "{}", text(&out));
    for bad in [&["a", "b"][..], &["--bogus", "gx"], &["--arch"]] {
        assert_eq!(run(bad).status.code(), Some(2), "{bad:?}");
    }
    let out = run(&["--arch", "mips", "gx"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("armv7 or aarch64"), "{}", text(&out));
    let out = run(&["--dry-run", "--bundle", "/x/foo.tar.gz", "gx"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("not a pzem-venus bundle"), "{}", text(&out));
    // The name goes into the GX's shell: anything but a bundle name is refused.
    for bad in [
        "/x/pzem-venus-0.1;reboot-armv7.tar.gz",
        "/x/pzem-venus-$(reboot)-armv7.tar.gz",
        "/x/pzem-venus-0.1.0 x-armv7.tar.gz",
        "/x/pzem-venus-0.1.0-mips.tar.gz",
    ] {
        let out = run(&["--dry-run", "--bundle", bad, "gx"]);
        assert_eq!(out.status.code(), Some(1), "{bad}: {}", text(&out));
        assert!(text(&out).contains("not a pzem-venus bundle"), "{bad}: {}", text(&out));
    }

    let out = run(&["--dry-run", "--bundle", "/x/pzem-venus-0.1.0-armv7.tar.gz", "gx.local"]);
    let t = ok(out, "deploy --dry-run");
    let commands: Vec<&str> = t.lines().filter(|l| l.starts_with("+ ")).collect();
    assert_eq!(commands.len(), 3, "{t}");
    assert_eq!(commands[0], "+ ssh root@gx.local mkdir -p /data/tmp");
    assert_eq!(
        commands[1],
        "+ scp /x/pzem-venus-0.1.0-armv7.tar.gz root@gx.local:/data/tmp/pzem-venus-0.1.0-armv7.tar.gz"
    );
    assert!(
        commands[2].starts_with("+ ssh root@gx.local ")
            && commands[2].contains("tar\\ xzf\\ pzem-venus-0.1.0-armv7.tar.gz")
            && commands[2].contains("sh\\ pzem-venus-0.1.0-armv7/install.sh"),
        "{t}"
    );
    // Without --bundle it builds one for the architecture the GX reports.
    let t = ok(run(&["--dry-run", "admin@gx"]), "deploy --dry-run without a bundle");
    assert!(
        t.contains("+ ssh admin@gx uname -m") && t.contains("+ scripts/package armv7"),
        "{t}"
    );
}

/// scripts/package from a fresh clone of the committed tree: two cross builds, so it
/// runs only when asked (`cargo test --test install -- --ignored`; scripts/test does in
/// its non-quick part).
#[test]
#[ignore = "builds both cross targets in a fresh clone (minutes); scripts/test runs it"]
fn package_from_a_fresh_clone_builds_both_bundles() {
    let dir = TempDir::new("clone");
    let clone = dir.path().join("pzem-venus");
    let head = Command::new("git")
        .args(["-C", REPO, "rev-parse", "HEAD"])
        .output()
        .unwrap();
    assert!(head.status.success());
    let head = String::from_utf8(head.stdout).unwrap().trim().to_owned();
    let out = Command::new("git")
        .args(["clone", "--quiet", "--shared", REPO])
        .arg(&clone)
        .output()
        .unwrap();
    ok(out, "git clone");
    ok(
        Command::new("git")
            .arg("-C")
            .arg(&clone)
            .args(["checkout", "--quiet", "--detach", &head])
            .output()
            .unwrap(),
        "git checkout",
    );
    let out = Command::new(clone.join("scripts/package"))
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    let t = ok(out, "scripts/package");
    eprintln!("{t}");
    let version = env!("CARGO_PKG_VERSION");
    for arch in ["armv7", "aarch64"] {
        let base = format!("pzem-venus-{version}-{arch}");
        let tarball = clone.join("target/package").join(format!("{base}.tar.gz"));
        let list = Command::new("tar").arg("tzvf").arg(&tarball).output().unwrap();
        let list = ok(list, "tar tzvf");
        let members: Vec<&str> = list
            .lines()
            .filter_map(|l| l.split_whitespace().last())
            .filter(|m| m.starts_with(&base))
            .collect();
        for want in [
            "install.sh",
            "uninstall.sh",
            "reapply.sh",
            "common.sh",
            "pzem.conf.example",
            "VERSION",
            "arch",
            "README",
            "bin/pzem-dbus",
            "bin/pzem-info",
            "service/pzem-dbus/run",
            "service/pzem-dbus/log/run",
            "service/pzem-energy/run",
            "service/pzem-logger/run",
            "service/pzem-web/run",
            "udev/zz-pzem-venus.rules.in",
            "docs/user-guide.md",
            "docs/dbus-reference.md",
            "docs/pzem-dbus.md",
        ] {
            assert!(
                members.contains(&format!("{base}/{want}").as_str()),
                "{arch}: no {want} in {members:?}"
            );
        }
        assert!(!members.iter().any(|m| m.ends_with("/pzem-sim")), "{members:?}");
        // Every [[bin]] but pzem-sim is in the bundle, stripped, for the right machine.
        let unpacked = dir.path().join(arch);
        fs::create_dir_all(&unpacked).unwrap();
        ok(
            Command::new("tar")
                .arg("xzf")
                .arg(&tarball)
                .arg("-C")
                .arg(&unpacked)
                .output()
                .unwrap(),
            "tar xzf",
        );
        let machine = if arch == "armv7" { "ARM" } else { "AArch64" };
        for bin in fs::read_dir(unpacked.join(&base).join("bin")).unwrap() {
            let bin = bin.unwrap().path();
            let header = ok(
                Command::new("readelf")
                    .args(["-h", "-S", "-W"])
                    .arg(&bin)
                    .output()
                    .unwrap(),
                "readelf",
            );
            let field = header
                .lines()
                .find_map(|l| l.trim_start().strip_prefix("Machine:"))
                .map(str::trim);
            assert_eq!(field, Some(machine), "{}", bin.display());
            assert!(!header.contains(".symtab"), "{} is not stripped", bin.display());
        }
        assert_eq!(read(&unpacked.join(&base).join("arch")).trim(), arch);
    }
}
