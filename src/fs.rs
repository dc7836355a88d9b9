//! Writing files so that a reader never sees half of one and nothing is replaced by accident:
//! every output goes to a temporary sibling first and is moved into place in one rename — a
//! no-replace rename (`renameat2(RENAME_NOREPLACE)` on Linux) unless the caller may replace.
//!
//! Temporaries are named `.NAME.partial-PID-XXXXXX` (and a replaced directory is moved aside as
//! `.NAME.old-PID-XXXXXX` until the new one is in place), so the next run to the same
//! destination recognises what a killed run left behind ([`clean_stale`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The files a model directory carries beside config.json and its weights, as the harness
/// copies them from the model it read (tokenizer, chat template, generation settings).
pub const MODEL_SIDE_FILES: &[&str] = &[
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
];

/// Whether `name` is a file the harness writes into a model directory: config.json, the
/// weights under the names it gives them (`model.safetensors`, or the shards
/// `model-NNNNN-of-NNNNN.safetensors` and their index), [`MODEL_SIDE_FILES`] and the recipe
/// (`recipe.json`). Anything else there is the user's — another `*.safetensors` too (a kept
/// original, say): `--overwrite` does not replace it.
pub fn is_model_file(name: &str) -> bool {
    matches!(
        name,
        "config.json" | "recipe.json" | "model.safetensors" | "model.safetensors.index.json"
    ) || is_shard_name(name)
        || MODEL_SIDE_FILES.contains(&name)
}

/// `model-NNNNN-of-NNNNN.safetensors`, the shards' names transformers and the harness write.
fn is_shard_name(name: &str) -> bool {
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    name.strip_prefix("model-")
        .and_then(|r| r.strip_suffix(".safetensors"))
        .and_then(|r| r.split_once("-of-"))
        .is_some_and(|(i, n)| digits(i) && digits(n))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, flushed to disk,
/// then renamed over `path` (replacing it, if it existed: callers decide whether they may).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Like [`write_atomic`], with the contents produced by `fill` writing into the open file.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    write_output(path, true, |f| fill(f).map_err(|e| Error::io(path, e)))
}

/// Writes files that belong together (a table as parquet and CSV) atomically as a set: every
/// temporary is written and flushed, and every destination checked to be no directory, before
/// the first rename, so a failure leaves every old file as it was and the set changes in
/// back-to-back renames, replacing what was there (callers decide whether they may).
pub fn write_atomic_all(files: &[(&Path, &[u8])]) -> Result<()> {
    let mut staged = Vec::with_capacity(files.len());
    for &(path, bytes) in files {
        if path.is_dir() {
            return Err(Error::io(path, std::io::Error::other("is a directory")));
        }
        let tmp = stage(path, |f| f.write_all(bytes).map_err(|e| Error::io(path, e)))?;
        staged.push((tmp, path));
    }
    for (tmp, path) in staged {
        tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
        sync_dir(parent_of(path));
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically and only if nothing is there: the temporary file is moved
/// into place with a no-replace rename, so a file that appears meanwhile is never clobbered.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    write_output(path, false, |f| {
        f.write_all(bytes).map_err(|e| Error::io(path, e))
    })
}

/// Like [`write_new`], with the contents produced by `fill` writing into the open file.
pub fn write_new_with(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    write_output(path, false, |f| fill(f).map_err(|e| Error::io(path, e)))
}

/// The parent directory of `path` ("." for a bare name).
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

fn file_name_of(path: &Path) -> Result<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .ok_or_else(|| Error::Output {
            path: path.to_path_buf(),
            msg: "not a file name (it ends in `..` or is a root)".into(),
        })
}

/// Gives `path` the permissions a plain create would have given it (0666, or 0777 for a
/// directory, less the umask): temporaries are made private (0600/0700) and would otherwise
/// keep that once moved into place, hiding a model from the other users of a machine.
pub fn publish_mode(path: &Path, dir: bool) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if dir { 0o777 } else { 0o666 } & !umask();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(path, e))?;
    }
    let _ = (path, dir);
    Ok(())
}

/// The process's umask, read without changing it (Linux's /proc/self/status; 022 elsewhere).
#[cfg(unix)]
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// The tag that names this process in its temporaries: its PID and, where the system says, its
/// start time (`PID.START`), so that a PID reused by another process (in a container the next
/// run is often PID 1 again) is not mistaken for the run that left them.
fn process_tag() -> String {
    let pid = std::process::id();
    match start_time(pid) {
        Some(t) => format!("{pid}.{t}"),
        None => pid.to_string(),
    }
}

/// When process `pid` started (clock ticks since boot, /proc/PID/stat field 22), if known.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command name (field 2) is in parentheses and may hold spaces: count after the last ')'
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether a directory entry named `name` is a run's temporary ([`partial_prefix`]'s names):
/// never the user's.
pub fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(".partial-")
}

/// The prefix of every temporary this process writes for destination `path`.
pub fn partial_prefix(path: &Path) -> Result<String> {
    Ok(format!(
        ".{}.partial-{}-",
        file_name_of(path)?,
        process_tag()
    ))
}

/// Writes the file `path` atomically: `fill` writes a temporary sibling (errors it returns are
/// passed on as they are), which is flushed to disk and renamed into place — replacing an
/// existing file only when `replace` is true. The temporary never outlives a failure.
pub fn write_output(
    path: &Path,
    replace: bool,
    fill: impl FnOnce(&mut std::fs::File) -> Result<()>,
) -> Result<()> {
    let tmp = stage(path, fill)?;
    if replace {
        tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    } else {
        tmp.persist_noclobber(path)
            .map_err(|e| exists_or_io(path, e.error))?;
    }
    sync_dir(parent_of(path));
    Ok(())
}

/// A temporary sibling of `path` holding what `fill` wrote, flushed to disk and given the mode
/// a new file gets: ready to be renamed into place (removed if dropped).
fn stage(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> Result<()>,
) -> Result<tempfile::NamedTempFile> {
    let dir = parent_of(path);
    // a folder the output names that does not exist yet is made (`check_destination` allows it)
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&partial_prefix(path)?)
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    fill(tmp.as_file_mut())?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    publish_mode(tmp.path(), false)?;
    Ok(tmp)
}

/// Like [`write_output`] for writers that want a path rather than an open file (e.g. candle's
/// `write_npy`): `fill` writes the temporary at the path it is given.
pub fn write_output_via_path(
    path: &Path,
    replace: bool,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let dir = parent_of(path);
    // a folder the output names that does not exist yet is made (`check_destination` allows it)
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(&partial_prefix(path)?)
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?
        .into_temp_path();
    fill(&tmp)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, e))?;
    publish_mode(&tmp, false)?;
    if replace {
        tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    } else {
        tmp.persist_noclobber(path)
            .map_err(|e| exists_or_io(path, e.error))?;
    }
    sync_dir(dir);
    Ok(())
}

fn exists_or_io(path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::AlreadyExists {
        Error::Exists {
            path: path.to_path_buf(),
        }
    } else {
        Error::io(path, e)
    }
}

fn sync_dir(dir: &Path) {
    // best effort: makes the rename durable where the platform allows opening a directory
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Renames `from` to `to` only if nothing exists at `to` (an `AlreadyExists` error otherwise),
/// atomically: `renameat2(RENAME_NOREPLACE)` on Linux. Where the file system lacks it, a file is
/// hard-linked then unlinked, and a directory is renamed onto an empty placeholder directory
/// created first (`mkdir` fails on anything present; the rename fails if the placeholder was
/// filled meanwhile) — never "check absent, then rename over".
pub fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let f = std::ffi::CString::new(from.as_os_str().as_bytes())?;
        let t = std::ffi::CString::new(to.as_os_str().as_bytes())?;
        // SAFETY: both pointers are valid NUL-terminated strings that outlive the call; the
        // syscall only reads them.
        let r = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                libc::AT_FDCWD,
                f.as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {}
            _ => return Err(e),
        }
    }
    rename_noreplace_fallback(from, to)
}

fn rename_noreplace_fallback(from: &Path, to: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(from)?.is_dir() {
        std::fs::create_dir(to)?; // fails if anything is there
        std::fs::rename(from, to).inspect_err(|_| {
            let _ = std::fs::remove_dir(to); // only succeeds while it is our empty placeholder
        })
    } else {
        std::fs::hard_link(from, to)?; // fails if anything is there
        std::fs::remove_file(from)
    }
}

/// What kind of output a destination receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// a single file (a zip, an npy, a JSON)
    File,
    /// a model directory (config.json and weights)
    ModelDir,
}

/// Checks, before any long work, that `out` can receive an output of `kind`: its parent is (or
/// can be made) a directory we may write in, and nothing is there (for a model, at most an empty
/// directory) unless `overwrite` — and even with `overwrite`, only what such an output would be (a file for a file; a model directory,
/// with config.json, or an empty directory for a model). Removes what killed runs left for this
/// destination (see [`clean_stale`]); prints a note about each thing found (stderr) and
/// returns the notes.
pub fn check_destination(out: &Path, kind: OutputKind, overwrite: bool) -> Result<Vec<String>> {
    let name = file_name_of(out)?;
    // the nearest ancestor that exists must be a directory
    for anc in out.ancestors().skip(1) {
        let anc = if anc.as_os_str().is_empty() {
            Path::new(".")
        } else {
            anc
        };
        match std::fs::metadata(anc) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(Error::Output {
                    path: out.to_path_buf(),
                    msg: format!("cannot be created: {} is not a directory", anc.display()),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(anc, e)),
        }
    }
    // printed here, so they are seen also when the checks below fail
    let notes = clean_stale(out);
    for n in &notes {
        eprintln!("note: {n}");
    }
    match std::fs::symlink_metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(out, e)),
        // an empty directory (made with mkdir for the output) holds nothing to lose
        Ok(m) if !overwrite && kind == OutputKind::ModelDir && m.is_dir() && is_empty_dir(out) => {}
        Ok(m) if !overwrite => {
            // what --overwrite would refuse too is said as such, not as "pass --overwrite"
            check_replaceable(out, &m, kind)?;
            return Err(Error::Exists {
                path: out.to_path_buf(),
            });
        }
        Ok(m) => check_replaceable(out, &m, kind)?,
    }
    // can we write beside it? (a read-only or foreign directory fails now, not after the work)
    let parent = parent_of(out);
    if parent.is_dir() {
        tempfile::Builder::new()
            .prefix(&format!(".{name}.probe-"))
            .tempfile_in(parent)
            .map_err(|e| Error::Output {
                path: out.to_path_buf(),
                msg: format!("cannot write in {}: {e}", parent.display()),
            })?;
    }
    Ok(notes)
}

/// Whether `dir` is a directory with nothing in it (false when it cannot be read).
fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}

fn check_replaceable(out: &Path, m: &std::fs::Metadata, kind: OutputKind) -> Result<()> {
    let refuse = |what: &str| {
        Err(Error::Output {
            path: out.to_path_buf(),
            msg: format!("{what}; refusing to replace it even with --overwrite"),
        })
    };
    match kind {
        OutputKind::File if !m.is_file() => refuse("is not a regular file"),
        OutputKind::ModelDir if !m.is_dir() => refuse("is not a directory"),
        OutputKind::ModelDir => {
            let empty = std::fs::read_dir(out)
                .map_err(|e| Error::io(out, e))?
                .next()
                .is_none();
            if empty {
                return Ok(());
            }
            if !out.join("config.json").is_file() {
                return refuse("is not a model directory (no config.json)");
            }
            // a model directory with the user's notes or folders in it: replacing it loses them
            let mut foreign: Vec<String> = std::fs::read_dir(out)
                .map_err(|e| Error::io(out, e))?
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    let dir = e.file_type().is_ok_and(|t| t.is_dir());
                    match (dir, is_model_file(&name)) {
                        _ if is_temporary(&name) => None,
                        (false, true) => None,
                        (true, _) => Some(format!("{name}/")),
                        (false, false) => Some(name),
                    }
                })
                .collect();
            foreign.sort();
            match foreign.is_empty() {
                true => Ok(()),
                false => refuse(&format!(
                    "holds what the harness does not write there ({}), which replacing it would \
                     lose; move that out or choose another --out",
                    foreign.join(", ")
                )),
            }
        }
        OutputKind::File => Ok(()),
    }
}

/// Fails if writing `out` could touch one of `inputs`: `out` is an input, or contains one (a
/// replaced directory would take it along), or — with `inside_forbidden` — lies inside one.
pub fn refuse_overlap(out: &Path, inputs: &[&Path], inside_forbidden: bool) -> Result<()> {
    let out_abs = absolute(out);
    for input in inputs {
        let Ok(inp) = std::fs::canonicalize(input) else {
            continue;
        };
        let why = if out_abs == inp {
            Some("is the input itself")
        } else if inp.starts_with(&out_abs) {
            Some("contains the input")
        } else if inside_forbidden && out_abs.starts_with(&inp) {
            Some("lies inside the input directory")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(Error::Output {
                path: out.to_path_buf(),
                msg: format!("{why} ({}); choose an output elsewhere", input.display()),
            });
        }
    }
    Ok(())
}

/// `p` made absolute with symlinks resolved as far as it exists (the rest appended).
fn absolute(p: &Path) -> PathBuf {
    let mut tail = vec![];
    let mut cur = p.to_path_buf();
    loop {
        if let Ok(c) = std::fs::canonicalize(&cur) {
            let mut r = c;
            for t in tail.iter().rev() {
                r.push(t);
            }
            return r;
        }
        match (cur.file_name().map(|n| n.to_os_string()), cur.parent()) {
            (Some(n), Some(par)) => {
                tail.push(n);
                cur = if par.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    par.to_path_buf()
                };
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// Whether process `pid` is alive (this process counts as alive).
fn pid_alive(pid: u32) -> bool {
    pid == std::process::id() || pid_alive_os(pid)
}

#[cfg(unix)]
fn pid_alive_os(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: signal 0 sends nothing; it only asks whether the process exists.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
fn pid_alive_os(_pid: u32) -> bool {
    true // cannot tell: leave it alone
}

fn remove_any(p: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(p)?.is_dir() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    }
}

/// Finds what killed runs left beside `out`: `.NAME.partial-PID-*` temporaries (removed when
/// process PID is gone; reported when it still runs or the name carries no PID), and
/// `.NAME.old-PID-*` (a previous `out` moved aside by an overwrite that did not finish: put back
/// when `out` is missing, else removed); and, where `out` is a folder (a report's), the same
/// for the files written inside it (a run killed while writing its README.md leaves a
/// `.README.md.partial-…` there). Returns one note per thing found.
pub fn clean_stale(out: &Path) -> Vec<String> {
    let mut notes = clean_stale_beside(out);
    let inside: std::collections::BTreeSet<String> = std::fs::read_dir(out)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            let at = n.rfind(".partial-").or_else(|| n.rfind(".old-"))?;
            (n.starts_with('.') && at > 1).then(|| n[1..at].to_string())
        })
        .collect();
    for name in inside {
        notes.extend(clean_stale_beside(&out.join(name)));
    }
    notes
}

fn clean_stale_beside(out: &Path) -> Vec<String> {
    let Ok(name) = file_name_of(out) else {
        return vec![];
    };
    let parent = parent_of(out);
    let Ok(entries) = std::fs::read_dir(parent) else {
        return vec![];
    };
    let (partial, old) = (format!(".{name}.partial-"), format!(".{name}.old-"));
    let mut notes = vec![];
    for e in entries.flatten() {
        let fname = e.file_name().to_string_lossy().to_string();
        let (rest, is_old) = if let Some(r) = fname.strip_prefix(&partial) {
            (r, false)
        } else if let Some(r) = fname.strip_prefix(&old) {
            (r, true)
        } else {
            continue;
        };
        let path = e.path();
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let after = &rest[digits.len()..];
        // `PID.START-…` (this version) or `PID-…` (without a start time)
        let (start, after) = match after.strip_prefix('.') {
            Some(a) => {
                let d: String = a.chars().take_while(char::is_ascii_digit).collect();
                (d.parse::<u64>().ok(), &a[d.len()..])
            }
            None => (None, after),
        };
        let pid = match after.chars().next() {
            None | Some('-') => digits.parse::<u32>().ok(),
            _ => None,
        };
        match pid {
            // this process's own work in progress (e.g. a study's scratch beside its report)
            Some(pid) if pid == std::process::id() => {}
            Some(pid) if pid_alive(pid) && start.is_none_or(|t| start_time(pid) == Some(t)) => {
                notes.push(format!(
                    "{} belongs to a run still going (pid {pid}); left alone",
                    path.display()
                ))
            }
            Some(pid) if is_old && std::fs::symlink_metadata(out).is_err() => {
                match rename_noreplace(&path, out) {
                    Ok(()) => notes.push(format!(
                        "restored {} from {} (moved aside by a run, pid {pid}, that was killed while replacing it)",
                        out.display(),
                        path.display()
                    )),
                    Err(err) => notes.push(format!(
                        "{} holds the previous {} (a killed run, pid {pid}, moved it aside) and could not be put back: {err}",
                        path.display(),
                        out.display()
                    )),
                }
            }
            Some(pid) => match remove_any(&path) {
                Ok(()) => notes.push(format!(
                    "removed {} left by a killed run (pid {pid})",
                    path.display()
                )),
                Err(err) => notes.push(format!(
                    "{} was left by a killed run (pid {pid}) and could not be removed: {err}",
                    path.display()
                )),
            },
            None => notes.push(format!(
                "{} looks like the leftover of an interrupted run (written by an older version); delete it if no run is writing {}",
                path.display(),
                out.display()
            )),
        }
    }
    notes
}

/// Moves the finished temporary directory `tmp` (beside `out`) to `out` without ever
/// replacing what is there (a model may take the place of an empty directory) — unless
/// `overwrite`, in which case what is at `out` (checked to be what [`check_destination`]
/// allows) is moved aside, the new output renamed in with a no-replace rename, and the old one
/// removed last. Something that appears at `out` meanwhile is
/// never touched: the move fails instead. `tmp` is removed on failure.
pub fn move_into_place(tmp: &Path, out: &Path, kind: OutputKind, overwrite: bool) -> Result<()> {
    let r = move_into_place_inner(tmp, out, kind, overwrite);
    if r.is_err() && std::fs::symlink_metadata(tmp).is_ok() {
        let _ = remove_any(tmp);
    }
    if r.is_ok() {
        sync_dir(parent_of(out));
    }
    r
}

fn move_into_place_inner(tmp: &Path, out: &Path, kind: OutputKind, overwrite: bool) -> Result<()> {
    let perms = std::fs::metadata(out).ok().map(|m| m.permissions());
    match rename_noreplace(tmp, out) {
        Ok(()) => return Ok(()),
        // an empty directory at `out` is taken: remove_dir removes only an empty one, and the
        // no-replace rename fails if anything appeared there in between; the output keeps the
        // permissions the user gave that directory
        Err(e)
            if e.kind() == std::io::ErrorKind::AlreadyExists
                && !overwrite
                && kind == OutputKind::ModelDir
                && std::fs::remove_dir(out).is_ok() =>
        {
            rename_noreplace(tmp, out).map_err(|e| exists_or_io(out, e))?;
            if let Some(p) = perms {
                std::fs::set_permissions(out, p).map_err(|e| Error::io(out, e))?;
            }
            return Ok(());
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && !overwrite => {
            return Err(Error::Output {
                path: out.to_path_buf(),
                msg: "appeared while this run was writing (another run?); it was left untouched and nothing was written".into(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(out, e)),
    }
    // replace: move the old one aside under a name no one else uses
    let m = std::fs::symlink_metadata(out).map_err(|e| Error::io(out, e))?;
    check_replaceable(out, &m, kind)?;
    let aside = tempfile::Builder::new()
        .prefix(&format!(".{}.old-{}-", file_name_of(out)?, process_tag()))
        .tempdir_in(parent_of(out))
        .map_err(|e| Error::io(parent_of(out), e))?
        .keep();
    // rename(2) may replace the empty placeholder directory just made by a directory
    if !m.is_dir() {
        let _ = std::fs::remove_dir(&aside);
        return Err(Error::Output {
            path: out.to_path_buf(),
            msg: "is not a directory; refusing to replace it".into(),
        });
    }
    std::fs::rename(out, &aside).map_err(|e| Error::io(out, e))?;
    if let Err(e) = rename_noreplace(tmp, out) {
        let what = match rename_noreplace(&aside, out) {
            Ok(()) => "the previous output was put back".to_string(),
            Err(_) => format!("the previous output is kept at {}", aside.display()),
        };
        return Err(Error::Output {
            path: out.to_path_buf(),
            msg: format!(
                "could not be replaced ({e}: something appeared there meanwhile?); {what}"
            ),
        });
    }
    std::fs::remove_dir_all(&aside).map_err(|e| Error::io(&aside, e))?;
    Ok(())
}
