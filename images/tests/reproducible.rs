//! Two clean builds of the same source, from checkouts at different paths, give the same image id:
//! the id names the content, so it must not depend on where or when the build ran.

use std::fs;

use images::{
    Arch,
    build::{self, Profile},
};

#[test]
fn clean_builds_from_different_paths_have_the_same_image_id() {
    let root = build::workspace_root();
    let scratch = tempfile::tempdir().expect("temp dir");
    let first = scratch.path().join("a");
    let second = scratch.path().join("a-checkout/at/another/depth");
    for checkout in [&first, &second] {
        build::copy_source_tree(&root, checkout).expect("copying the source tree");
    }
    for arch in Arch::ALL {
        let a = build::build(&first, "hello", arch, Profile::Release).unwrap_or_else(|e| panic!("{arch}, first: {e}"));
        let b =
            build::build(&second, "hello", arch, Profile::Release).unwrap_or_else(|e| panic!("{arch}, second: {e}"));
        assert_eq!(a.id, b.id, "{arch}: the same source built at two paths gave two image ids");
        let kernel_a = fs::read(&a.kernel).expect("kernel");
        let kernel_b = fs::read(&b.kernel).expect("kernel");
        assert!(kernel_a == kernel_b, "{arch}: the kernels differ");
        let path = second.to_string_lossy();
        let leaked = kernel_b.windows(path.len()).any(|w| w == path.as_bytes());
        assert!(!leaked, "{arch}: the checkout path {path} is embedded in the kernel");
    }
}
