//! Compiles `proto/echo.proto` and `proto/authz.proto` with protox (pure Rust, no protoc needed)
//! and generates tonic code.
fn main() {
    const PROTOS: [&str; 2] = ["proto/echo.proto", "proto/authz.proto"];
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(PROTOS, ["proto"]).expect("compile the testkit's protos");
    tonic_prost_build::configure()
        .compile_fds(fds)
        .expect("generate tonic code for the testkit's protos");
}
