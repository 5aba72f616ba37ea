//! The CLI conventions of docs/cli.md against a real TP daemon on a real
//! token: `--tp CARD` works everywhere (the card publishes the TP's
//! addresses, signed), `--tp-addr` overrides it, exit statuses by class.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use vtp_e2e::{bin, vtp, Party, Tp};

fn p(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

/// `tp-daemon serve` on a port chosen here (the card must name it before
/// the daemon starts); killed on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TP whose tp.toml publishes `addresses`, its card re-exported.
fn tp_with_addresses(addresses: &[String]) -> Tp {
    let tp = Tp::init();
    let config = std::fs::read_to_string(tp.config()).unwrap();
    let list = addresses
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let edited = config.replacen("\nname = ", &format!("\naddresses = [{list}]\nname = "), 1);
    assert_ne!(config, edited, "no top-level name in tp.toml");
    std::fs::write(tp.config(), edited).unwrap();
    let out = Command::new(bin("tp-daemon"))
        .arg("card")
        .arg("--config")
        .arg(tp.config())
        .arg("--out")
        .arg(tp.card())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tp
}

fn serve(tp: &Tp, port: u16) -> Daemon {
    let mut child = Command::new(bin("tp-daemon"))
        .args(["serve", "--allow-root", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--config")
        .arg(tp.config())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("listening on "),
        "daemon did not start: {line:?}"
    );
    Daemon(child)
}

#[test]
fn tp_card_is_enough_to_reach_the_tp() {
    let port = free_port();
    // The first address leads nowhere: the client goes on to the next.
    let dead = free_port();
    let addresses = vec![format!("127.0.0.1:{dead}"), format!("127.0.0.1:{port}")];
    let tp = tp_with_addresses(&addresses);
    let _daemon = serve(&tp, port);
    let dir = tempfile::tempdir().unwrap();
    let alice = Party::new(dir.path(), "alice");
    let bob = Party::new(dir.path(), "bob");
    let card = p(&tp.card());

    let shown = vtp(["tp", "show", &card, "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(shown.stdout.trim()).unwrap();
    assert_eq!(v["addresses"], serde_json::json!(addresses));

    // tp fetch from the card alone: the same TP, a freshly signed card.
    let fetched = p(&dir.path().join("fetched.card"));
    vtp(["tp", "fetch", "--tp", &card, "--out", &fetched]).ok();

    let msg = dir.path().join("m");
    std::fs::write(&msg, b"reached through the card's address").unwrap();
    let env = p(&alice.path("m.env"));
    let rc = p(&bob.path("m.rc"));
    vtp([
        "send",
        "--as",
        &p(&alice.id),
        "--to",
        &p(&bob.card),
        "--tp",
        &fetched,
        "--deadline",
        "1h",
        "--in",
        &p(&msg),
        "--out",
        &env,
    ])
    .ok();
    vtp([
        "accept",
        "--as",
        &p(&bob.id),
        "--tp",
        &card,
        &env,
        "--out",
        &rc,
    ])
    .ok();

    // claim with --tp CARD: no address on the command line.
    let out = p(&bob.path("m.out"));
    let r = vtp([
        "claim",
        "--as",
        &p(&bob.id),
        "--tp",
        &card,
        &env,
        &rc,
        "--out",
        &out,
        "--json",
    ])
    .ok();
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["message_file"], out.as_str());
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&msg).unwrap());
    // With neither: the card the envelope carries (claims are idempotent).
    let again = p(&bob.path("m.again"));
    let aff = p(&bob.path("m.aff"));
    vtp([
        "claim",
        "--as",
        &p(&bob.id),
        &env,
        &rc,
        "--out",
        &again,
        "--affidavit-out",
        &aff,
    ])
    .ok();
    // inspect reads the TP's affidavit without acting on it.
    let r = vtp(["inspect", &aff, "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["kind"], "TP affidavit");
    assert_eq!(v["statement"], "resolved");
    assert!(v["journal_seq"].as_u64().unwrap() > 0, "{v}");
    // --tp-addr overrides.
    let third = p(&bob.path("m.third"));
    vtp([
        "claim",
        "--as",
        &p(&bob.id),
        "--tp-addr",
        &format!("127.0.0.1:{port}"),
        &env,
        &rc,
        "--out",
        &third,
    ])
    .ok();

    // receipts with --tp CARD.
    let rdir = p(&alice.path("receipts"));
    let r = vtp([
        "receipts",
        "--as",
        &p(&alice.id),
        "--tp",
        &card,
        "--out-dir",
        &rdir,
        "--json",
    ])
    .ok();
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["receipts"].as_array().unwrap().len(), 1, "{v}");

    // The TP refuses an unclaimed certificate before the deadline: exit 4.
    let never = p(&alice.path("m.never"));
    let r = vtp([
        "unclaimed",
        "--as",
        &p(&alice.id),
        "--tp",
        &card,
        &env,
        "--out",
        &never,
        "--json",
    ]);
    assert_eq!(r.status, 4, "{} / {}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["error"]["class"], "tp-refused");

    // Another TP's card: its addresses lead to this TP, whose id differs.
    let other = tp_with_addresses(&[format!("127.0.0.1:{port}")]);
    let r = vtp([
        "receipts",
        "--as",
        &p(&alice.id),
        "--tp",
        &p(&other.card()),
        "--out-dir",
        &rdir,
    ]);
    assert_eq!(r.status, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("refusing to talk to the wrong TP"),
        "{}",
        r.stderr
    );
}
