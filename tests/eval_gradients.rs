//! A gradient may be taken in eval mode: the loss of a quantized f32 model on the CPU,
//! whose forward pass takes lamina's fused kernels outside training (q/k/v products,
//! gated units, products with the residual), has the same gradients as the plain graph
//! that training mode runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use lamina::families::LanguageModel;
use lamina::heads::ModelInput;
use lamina::loader::{LoadOptions, load_blocking};
use mlx_rs::error::Exception;
use mlx_rs::module::FlattenedModuleParam;
use mlx_rs::{Array, nn};

fn grads(model: &mut Box<dyn LanguageModel>, training: bool) -> (f32, FlattenedModuleParam) {
    model.training_mode(training);
    let ids = Array::from_iter((0..2 * 7).map(|i| (i * 7 + 3) % 32), &[2, 7]);
    let loss_fn = |model: &mut Box<dyn LanguageModel>,
                   (x, y): (&Array, &Array)|
     -> Result<Array, Exception> {
        let out =
            model.forward(ModelInput::new(x).with_labels(y)).map_err(|e| Exception::custom(e.to_string()))?;
        out.loss.ok_or_else(|| Exception::custom("no loss"))
    };
    let mut value_and_grad = nn::value_and_grad(loss_fn);
    let (loss, grads) = value_and_grad(model, (&ids, &ids)).unwrap();
    (loss.item_exact::<f32>(), grads)
}

#[test]
fn eval_mode_gradients_of_a_quantized_model_equal_the_plain_graphs() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoints/llama_mlx_4bit");
    let mut loaded = load_blocking(path, LoadOptions::default()).unwrap();
    let (eval_loss, eval) = grads(&mut loaded.model, false);
    let (train_loss, train) = grads(&mut loaded.model, true);
    assert!((eval_loss - train_loss).abs() < 1e-5, "{eval_loss} vs {train_loss}");
    assert!(!train.is_empty());
    assert_eq!(eval.len(), train.len());
    for (name, g) in &train {
        let e = &eval[name];
        let diff = e.subtract(g).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>();
        let scale = g.abs().unwrap().max(None).unwrap().item_exact::<f32>().max(1e-6);
        assert!(diff <= 1e-4 * scale.max(1.0), "{name}: {diff} (largest {scale})");
    }
}
