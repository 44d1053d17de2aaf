//! `bao-kms-preflight rewrite` against the fake Kubernetes API: every object
//! of the encrypted resources is replaced exactly once, unchanged, with the
//! resourceVersion it was read at, page by page; conflicts are retried by
//! re-reading (never forced) and fail the object after the retry limit;
//! `--dry-run` writes nothing; `--continue` resumes one resource; an expired
//! token, a resource the configuration does not encrypt and a missing
//! `--resource` are refused with the reason.

use serde_json::{Value, json};

use crate::common::fake_api::FakeApi;
use crate::common::run;

const EC: &str = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets, configmaps]\n    providers:\n      - kms: {apiVersion: v2, name: openbao-kms-workload-a, endpoint: unix:///run/openbao-kms/kms.sock}\n      - identity: {}\n  - resources: [events]\n    providers:\n      - identity: {}\n";

struct Cluster {
    api: FakeApi,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// 6 secrets in each of ns-a and ns-b, 3 configmaps in ns-a.
    fn new() -> Self {
        let api = FakeApi::start();
        for ns in ["ns-a", "ns-b"] {
            for i in 0..6 {
                api.add_object("secrets", ns, &format!("s-{i}"), json!({"k": format!("dmFsdWU{i}")}));
            }
        }
        for i in 0..3 {
            api.add_object("configmaps", "ns-a", &format!("cm-{i}"), json!({"k": "v"}));
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ec.yaml"), EC).unwrap();
        Self { api, dir }
    }

    fn args(&self, extra: &[&str]) -> Vec<String> {
        let kubeconfig = self.api.write_kubeconfig(self.dir.path(), "kube-system");
        let mut args: Vec<String> = vec![
            "rewrite".into(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--encryption-config".into(),
            self.dir.path().join("ec.yaml").display().to_string(),
            "--page-size".into(),
            "5".into(),
            "--rate".into(),
            "1000".into(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    }

    fn run_json(&self, extra: &[&str]) -> (i32, Value, String) {
        let (code, out, err) = run(&self.args(&[extra, &["-o", "json"]].concat()), &[]);
        let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
        (code, v, err)
    }
}

fn resource<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == name)
        .unwrap_or_else(|| panic!("no {name} in {summary:#}"))
}

fn puts(api: &FakeApi) -> usize {
    api.requests().iter().filter(|r| r.starts_with("PUT ")).count()
}

#[test]
fn every_object_is_replaced_once_unchanged_and_conflicts_are_retried() {
    let c = Cluster::new();
    c.api.conflict_next("secrets", "ns-a", "s-3", 2);
    let (code, summary, err) = c.run_json(&["--progress"]);
    assert_eq!(code, 0, "{summary:#}{err}");
    let s = resource(&summary, "secrets");
    assert_eq!(
        (
            &s["listed"],
            &s["rewritten"],
            &s["conflictsRetried"],
            &s["failed"],
            &s["gone"]
        ),
        (&json!(12), &json!(12), &json!(2), &json!(0), &json!(0)),
        "{summary:#}"
    );
    assert_eq!(s["apiVersion"], "v1");
    let cm = resource(&summary, "configmaps");
    assert_eq!((&cm["listed"], &cm["rewritten"]), (&json!(3), &json!(3)));
    // Exactly one successful write per object; events (identity) untouched.
    let writes = c.api.writes("secrets");
    assert_eq!(writes.len(), 12);
    assert!(writes.values().all(|n| *n == 1), "{writes:?}");
    assert_eq!(c.api.writes("configmaps").len(), 3);
    // Pages of 5: three list requests for 12 secrets, the later two with continue.
    let lists: Vec<String> = c
        .api
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /api/v1/secrets?"))
        .collect();
    assert_eq!(lists.len(), 3, "{lists:?}");
    assert!(lists.iter().all(|l| l.contains("limit=5")), "{lists:?}");
    assert!(lists[1].contains("continue="), "{lists:?}");
    // The conflicting object was re-read before each retry.
    let rereads = c
        .api
        .requests()
        .iter()
        .filter(|r| *r == "GET /api/v1/namespaces/ns-a/secrets/s-3")
        .count();
    assert_eq!(rereads, 2);
    // Progress names the token to resume from.
    assert!(
        err.contains("rewrite: secrets: 5 listed, 5 rewritten; resume with --resource secrets --continue ns-a/s-4"),
        "{err}"
    );

    // The table summary.
    let (code, table, _) = run(&c.args(&[]), &[]);
    assert_eq!(code, 0, "{table}");
    assert!(table.starts_with("RESOURCE"), "{table}");
    assert!(
        table.contains("rewrite: 15/15 objects rewritten in 2 resources, 0 failed"),
        "{table}"
    );
}

#[test]
fn dry_run_lists_and_writes_nothing() {
    let c = Cluster::new();
    let (code, summary, _) = c.run_json(&["--dry-run"]);
    assert_eq!(code, 0, "{summary:#}");
    assert_eq!(summary["dryRun"], true);
    assert_eq!(resource(&summary, "secrets")["listed"], 12);
    assert_eq!(resource(&summary, "secrets")["rewritten"], 0);
    assert_eq!(puts(&c.api), 0);
    let (_, table, _) = run(&c.args(&["--dry-run"]), &[]);
    assert!(
        table.contains("15 objects in 2 resources would be rewritten; nothing was written"),
        "{table}"
    );
}

#[test]
fn endless_conflicts_fail_the_object_without_forcing_it() {
    let c = Cluster::new();
    c.api.conflict_next("secrets", "ns-b", "s-1", 99);
    let (code, summary, _) = c.run_json(&["--resource", "secrets"]);
    assert_eq!(code, 4, "{summary:#}");
    let s = resource(&summary, "secrets");
    assert_eq!((&s["rewritten"], &s["failed"]), (&json!(11), &json!(1)), "{summary:#}");
    assert_eq!(s["failures"][0]["namespace"], "ns-b");
    assert_eq!(s["failures"][0]["name"], "s-1");
    assert!(
        s["failures"][0]["error"]
            .as_str()
            .unwrap()
            .contains("still conflicting after 5 re-reads")
    );
    assert!(
        !c.api
            .writes("secrets")
            .contains_key(&("ns-b".to_owned(), "s-1".to_owned()))
    );
    assert_eq!(
        summary["resources"].as_array().unwrap().len(),
        1,
        "only --resource secrets"
    );
}

#[test]
fn continue_resumes_one_resource_and_bad_requests_are_refused() {
    let c = Cluster::new();
    let (code, summary, _) = c.run_json(&["--resource", "secrets", "--continue", "ns-a/s-4"]);
    assert_eq!(code, 0, "{summary:#}");
    assert_eq!(resource(&summary, "secrets")["listed"], 7, "{summary:#}");
    let writes = c.api.writes("secrets");
    assert!(!writes.contains_key(&("ns-a".to_owned(), "s-4".to_owned())));
    assert!(writes.contains_key(&("ns-a".to_owned(), "s-5".to_owned())));

    // --continue needs exactly one resource.
    let (code, _, err) = run(&c.args(&["--continue", "ns-a/s-4"]), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("pass exactly one --resource"), "{err}");
    // A resource the configuration does not encrypt.
    let (code, _, err) = run(&c.args(&["--resource", "events"]), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--resource events: the EncryptionConfiguration does not encrypt it"),
        "{err}"
    );
    // An expired continue token: exit 5 with what to do.
    c.api.state.lock().unwrap().expired_tokens.push("ns-a/s-1".into());
    let (code, summary, _) = c.run_json(&["--resource", "secrets", "--continue", "ns-a/s-1"]);
    assert_eq!(code, 5, "{summary:#}");
    assert!(
        summary["error"]
            .as_str()
            .unwrap()
            .contains("the continue token expired"),
        "{summary:#}"
    );
    assert_eq!(resource(&summary, "secrets")["resumeContinue"], "ns-a/s-1");
}
