fn main() {
    // An rpath to libmlx (the binary runs as built and with a bundle beside it), and the
    // embedded default model's path as LAMINA_DEFAULT_MODEL.
    lamina_build::link_mlx();
}
