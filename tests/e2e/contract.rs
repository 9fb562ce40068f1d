//! The API contract: `GET /openapi.json` is what producers generate clients from, so the
//! server must answer exactly as it says. An `abridge api` (and a worker, so that batches
//! finish and their event streams end) runs against the test's servers; the document is
//! validated with openapi-spec-validator, and Schemathesis runs every operation with
//! `--checks all`, a fixed seed and example count; any finding fails the test.
//!
//! Both tools come from PyPI, at the versions pinned in `contract/requirements.txt`, into a
//! virtual environment under the target directory that later runs reuse.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use abridge_testkit::TestEnv;

use crate::support::*;

/// The fuzzer's seed: the same requests on every run.
const SEED: &str = "20";
/// Generated test cases per operation and phase, with a tenant's token and with the operator's
/// (the same operations; only what they see differs).
const TENANT_EXAMPLES: &str = "100";
const OPERATOR_EXAMPLES: &str = "30";

fn contract_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/contract")
}

fn output_text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(command: &mut Command, what: &str) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start {command:?}: {e}"))
}

/// The venv with the pinned tools, created (or re-created when the pins changed) once.
fn tools_venv() -> PathBuf {
    let requirements = contract_dir().join("requirements.txt");
    let pins = std::fs::read_to_string(&requirements).expect("read contract/requirements.txt");
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("contract-venv");
    let stamp = venv.join("abridge-requirements.txt");
    if std::fs::read_to_string(&stamp).is_ok_and(|installed| installed == pins) {
        return venv;
    }
    let python = std::env::var("ABRIDGE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let _ = std::fs::remove_dir_all(&venv);
    let out = run(
        Command::new(&python).args(["-m", "venv"]).arg(&venv),
        "create the contract test's venv (needs Python 3 with venv; .ci/run installs it)",
    );
    assert!(
        out.status.success(),
        "python -m venv: {}",
        output_text(&out)
    );
    let started = Instant::now();
    let out = run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements),
        "install schemathesis and openapi-spec-validator",
    );
    assert!(out.status.success(), "pip install: {}", output_text(&out));
    eprintln!(
        "contract: installed the pinned tools in {:?}",
        started.elapsed()
    );
    std::fs::write(&stamp, pins).expect("write the venv's stamp");
    venv
}

#[tokio::test]
async fn the_api_answers_exactly_as_its_openapi_document_says() {
    let venv = tools_venv();

    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let mut fleet = Fleet::new(
        TestEnv::new().await,
        &[
            // Every batch finishes soon, so its event stream ends: items summarize with
            // `noop` unless the batch asks for another backend, and then fail at once (the
            // LLM backends have no key; YouTube is a port nothing listens on).
            ("ABRIDGE_MAX_ATTEMPTS", "1"),
            ("ABRIDGE_YOUTUBE_BASE_URL", &nowhere),
            // The fuzzer's webhook URLs are loopback ones (contract/schemathesis.toml).
            ("ABRIDGE_WEBHOOK_ALLOW_PRIVATE", "true"),
        ],
    )
    .await;
    let (code, out, err) = fleet.run(&["token", "create", "--tenant", "fuzz", "--json"], None);
    assert_eq!(code, 0, "{err}");
    let made: serde_json::Value = serde_json::from_str(&out).unwrap();
    let token = made["token"].as_str().unwrap().to_owned();

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    fleet.spawn("api", &["api", "--listen", &listen], &[]);
    fleet.spawn_worker(4);
    wait_healthy(port).await;
    let base = format!("http://{listen}");

    // The document is valid OpenAPI.
    let (status, document) = http_get(port, "/openapi.json")
        .await
        .expect("the API answers");
    assert_eq!(status, 200, "{document}");
    let work = tempfile::tempdir().unwrap();
    let document_file = work.path().join("openapi.json");
    std::fs::write(&document_file, &document).unwrap();
    let out = run(
        Command::new(venv.join("bin/openapi-spec-validator")).arg(&document_file),
        "validate the document",
    );
    assert!(
        out.status.success(),
        "openapi-spec-validator: {}",
        output_text(&out)
    );

    // The server answers as the document says, for every operation and every check: to a
    // tenant, and to the operator (who sees every batch and the fleet's figures).
    let (code, out, err) = fleet.run(&["token", "create", "--operator", "--json"], None);
    assert_eq!(code, 0, "{err}");
    let made: serde_json::Value = serde_json::from_str(&out).unwrap();
    let operator = made["token"].as_str().unwrap().to_owned();
    let api = fleet.workers.first().expect("the api process");
    for (who, token, examples) in [
        ("tenant", &token, TENANT_EXAMPLES),
        ("operator", &operator, OPERATOR_EXAMPLES),
    ] {
        let started = Instant::now();
        let out = run(
            Command::new(venv.join("bin/schemathesis"))
                .current_dir(work.path())
                .arg("--config-file")
                .arg(contract_dir().join("schemathesis.toml"))
                .args(["run", &format!("{base}/openapi.json")])
                .args(["--header", &format!("Authorization: Bearer {token}")])
                .args([
                    "--checks",
                    "all",
                    "--seed",
                    SEED,
                    "--max-examples",
                    examples,
                ])
                .args(["--generation-database", "none", "--request-timeout", "10"])
                .args(["--continue-on-failure", "--no-color"]),
            "run schemathesis",
        );
        let report = output_text(&out);
        assert!(
            out.status.success(),
            "schemathesis, with a {who} token, found the server and its document disagree:\n\
             {report}\n\nabridge api:\n{}",
            api.logs()
        );
        let generated = report
            .lines()
            .find(|l| l.contains(" generated, "))
            .unwrap_or_default()
            .trim()
            .to_owned();
        eprintln!("contract ({who}): {generated} in {:?}", started.elapsed());
        assert!(
            generated.contains("passed") && !generated.starts_with("0 generated"),
            "{report}"
        );
    }
}
