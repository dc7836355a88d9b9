//! What the launcher reads from a kernel module's PTX text. Host code (no CUDA), so it is tested
//! on any build: launching a kernel programmatically that does not wait for its predecessor
//! would let it read that kernel's output before it is written.

/// Whether the PTX entry `name` of `ptx` executes `griddepcontrol.wait`: its text, from its
/// `.entry name(` line to the next entry, holds the instruction. False where there is no such
/// entry.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn entry_waits(ptx: &str, name: &str) -> bool {
    let head = format!(".entry {name}(");
    let Some(at) = ptx.find(&head) else {
        return false;
    };
    let body = &ptx[at + head.len()..];
    let body = body.find(".entry ").map_or(body, |end| &body[..end]);
    body.contains("griddepcontrol.wait")
}

#[cfg(test)]
mod tests {
    use super::entry_waits;

    // two entries as nvcc writes them for compute_90, one name a prefix of the other's
    const PTX: &str = "
.version 8.8
.target sm_90
.visible .entry gemm_w4_s16(
	.param .u64 gemm_w4_s16_param_0
)
{
	cp.async.cg.shared.global [%r1], [%rd1], 16, %r2;
	griddepcontrol.wait;
	griddepcontrol.launch_dependents;
	ret;
}
.visible .entry gemm_w4_s16_z(
	.param .u64 gemm_w4_s16_z_param_0
)
{
	ret;
}
";

    #[test]
    fn only_an_entry_that_holds_the_wait_waits() {
        assert!(entry_waits(PTX, "gemm_w4_s16"));
        // the next entry's text is its own: the first entry's wait does not count for it
        assert!(!entry_waits(PTX, "gemm_w4_s16_z"));
        assert!(!entry_waits(PTX, "gemm_w4"), "no entry of that exact name");
        assert!(!entry_waits("", "gemm_w4_s16"));
    }

    #[test]
    fn the_last_entry_runs_to_the_end_of_the_text() {
        let tail = |body: &str| format!("{PTX}.visible .entry tail(\n)\n{{\n\t{body}\n}}\n");
        assert!(entry_waits(&tail("griddepcontrol.wait;"), "tail"));
        assert!(!entry_waits(&tail("ret;"), "tail"));
        // and an entry before it still ends where the tail begins
        assert!(!entry_waits(&tail("griddepcontrol.wait;"), "gemm_w4_s16_z"));
    }
}
