//! Build steps: the store's record schema (proto/store.proto) compiled with prost.
//! The CRI API itself comes precompiled from the `k8s-cri` crate (which needs `protoc` too).

fn main() {
    println!("cargo:rerun-if-changed=proto/store.proto");
    if let Err(err) = prost_build::compile_protos(&["proto/store.proto"], &["proto/"]) {
        // protoc missing is the usual cause; say which package provides it.
        panic!("compiling proto/store.proto failed (is Debian's protobuf-compiler installed?): {err}");
    }
}
