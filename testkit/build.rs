//! Compiles `proto/echo.proto` with protox (pure Rust, no protoc needed) and generates tonic code.
fn main() {
    println!("cargo:rerun-if-changed=proto/echo.proto");
    let fds = protox::compile(["proto/echo.proto"], ["proto"]).expect("compile proto/echo.proto");
    tonic_prost_build::configure()
        .compile_fds(fds)
        .expect("generate tonic code for echo.proto");
}
