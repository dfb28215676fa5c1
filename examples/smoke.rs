//! smoke
fn main() {
    let a = mlx_rs::Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
    let b = a.matmul(&a).unwrap();
    println!("{:?}", b.as_slice::<f32>());
    let k = mlx_rs::random::normal::<f32>(&[3], None, None, None).unwrap();
    println!("{:?}", k.as_slice::<f32>());
}
