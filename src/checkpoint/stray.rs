//! What a model directory holds beyond the model: weights files its loaders do not read (vLLM
//! might: a problem) and files the harness does not write (zipped all the same: named).

use std::path::Path;

/// A `*.safetensors` file beside the weights the model reads. Without
/// `model.safetensors.index.json` vLLM loads every `*.safetensors` of the directory, so a stray
/// file's tensors collide with the model's (or add to them); with an index it is skipped, and
/// only dead weight in the zip.
pub(super) fn stray_weights(dir: &Path, p: &mut Vec<String>) {
    let Ok(read) = super::reader::shard_files(dir) else {
        return;
    };
    let indexed = dir.join("model.safetensors.index.json").is_file();
    for path in super::reader::safetensors_in(dir).unwrap_or_default() {
        if read.contains(&path) {
            continue;
        }
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        p.push(if indexed {
            format!("{name}: a weights file model.safetensors.index.json does not name: vLLM skips it, so it is dead weight in the zip; remove it")
        } else {
            format!("{name}: a weights file beside model.safetensors that the model does not read; vLLM loads every *.safetensors of a directory without an index, so its tensors would collide with the model's; remove it")
        });
    }
}

/// Notes on the files `package` zips that are not a model's (not hidden: hidden ones are left
/// out): they go to the submission, so the user sees their names.
pub(super) fn foreign_files(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut names: Vec<String> = rd
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().to_string())
        // weights files are the stray-weights check's (above): each is named once
        .filter(|n| !n.starts_with('.') && !crate::fs::is_model_file(n))
        .filter(|n| !n.ends_with(".safetensors"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| format!("{n} is zipped too, though no model loader reads it: remove it from the directory if it is not meant to be submitted"))
        .collect()
}
