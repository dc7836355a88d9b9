//! CI does not execute the notebooks (evcxr_jupyter is a 30-minute build, and running them
//! compiles a program against the crate), so it checks them cheaply: valid notebook JSON, the
//! Rust kernel, the crate pulled in by path, and that they were committed executed without
//! errors. `notebooks/run.sh` executes them (with evcxr's kernel, or `scripts/run_notebooks.py`).

use std::path::PathBuf;

#[test]
fn notebooks_are_rust_notebooks_on_this_crate() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("notebooks");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "ipynb") {
            continue;
        }
        n += 1;
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(
            v["metadata"]["kernelspec"]["name"],
            "rust",
            "{}",
            p.display()
        );
        let code: String = v["cells"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["cell_type"] == "code")
            .map(|c| match &c["source"] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_str()).collect(),
                _ => String::new(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            code.contains(":dep exaone-compress = { path = \"..\" }"),
            "{}",
            p.display()
        );
        // committed executed (notebooks/run.sh): every cell past the :dep one produced output,
        // and none an error
        for c in v["cells"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["cell_type"] == "code")
        {
            let outs = c["outputs"].as_array().unwrap();
            assert!(
                outs.iter().all(|o| o["output_type"] != "error"),
                "{}: a cell failed when it was last run",
                p.display()
            );
            assert!(
                c["execution_count"].is_number(),
                "{}: a cell was not executed; run notebooks/run.sh",
                p.display()
            );
        }
    }
    assert!(n >= 2, "at least the two notebooks");
}
