//! The trainer: steps (value and gradient of the loss over the trainable parameters only,
//! accumulation, clipping by global norm, the schedule), evaluation, and checkpoints it can
//! resume from exactly.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use lamina_core::distributed::Group;
use lamina_families::LanguageModel;
use lamina_heads::ModelInput;
use mlx_rs::error::Exception;
use mlx_rs::module::FlattenedModuleParam;
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{Array, nn};
use serde::{Deserialize, Serialize};

use crate::data::{Batch, Batching, TokenDataset};
use crate::error::{Result, TrainError};
use crate::model::TrainableModel;
use crate::optimizer::{OptimizerConfig, TrainOptimizer};
use crate::precision::{LossScale, Precision, cast_frozen};
use crate::schedule::LrSchedule;
use crate::weights;

/// The trainable parameters' file in a trainer checkpoint.
const TRAINABLE: &str = "trainable.safetensors";
use lamina_loader::{read_json, write_json};

/// How to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerConfig {
    /// Rows per micro-batch.
    pub batch_size: usize,
    /// Tokens per row.
    pub seq_len: usize,
    /// Padding or packing.
    pub batching: Batching,
    /// Padding id (masked out).
    pub pad_id: u32,
    /// Optimizer steps.
    pub steps: usize,
    /// Micro-batches per optimizer step (gradients averaged).
    pub grad_accumulation: usize,
    /// Clip the gradients' global norm to this.
    pub grad_clip: Option<f32>,
    /// The learning-rate schedule.
    pub schedule: LrSchedule,
    /// AdamW or SGD.
    pub optimizer: OptimizerConfig,
    /// Evaluate every this many steps (0 = never during training).
    pub eval_every: usize,
    /// Shuffling and dropout seed.
    pub seed: u64,
    /// f32, or bf16/f16 frozen weights and activations over f32 trainable parameters.
    #[serde(default)]
    pub precision: Precision,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        TrainerConfig {
            batch_size: 4,
            seq_len: 256,
            batching: Batching::Pad,
            pad_id: 0,
            steps: 100,
            grad_accumulation: 1,
            grad_clip: Some(1.0),
            schedule: LrSchedule { peak: 1e-4, min: 1e-5, warmup_steps: 10, total_steps: 100 },
            optimizer: OptimizerConfig::default(),
            eval_every: 0,
            seed: 0,
            precision: Precision::F32,
        }
    }
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// The step (1-based).
    pub step: usize,
    /// Mean training loss over the step's micro-batches.
    pub loss: f32,
    /// The learning rate used.
    pub lr: f32,
    /// The gradients' global norm before clipping.
    pub grad_norm: f32,
    /// Training tokens per second.
    pub tokens_per_s: f64,
    /// Held-out loss, when evaluated at this step.
    pub eval_loss: Option<f32>,
    /// Whether the update was skipped: the gradients overflowed under f16 loss scaling.
    #[serde(default)]
    pub skipped: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct TrainerState {
    step: usize,
    config: TrainerConfig,
    #[serde(default)]
    loss_scale: Option<LossScale>,
}

/// Trains a model: a family's language model (the default), or any [`TrainableModel`]
/// such as a backbone under a classification or regression head.
///
/// [`Trainer::train_step`] and [`Trainer::evaluate`] take any [`Batch`]es whose labels
/// suit the model's head (`[B, L]` next-token ids for an LM, `[B]` class ids or `[B, n]`
/// targets for the sequence heads); [`Trainer::fit`] draws LM batches from a
/// [`TokenDataset`].
#[derive(Debug)]
pub struct Trainer<M: TrainableModel = Box<dyn LanguageModel>> {
    /// The model (its frozen parameters do not train).
    pub model: M,
    config: TrainerConfig,
    optimizer: TrainOptimizer,
    step: usize,
    /// Whether the frozen weights were cast to the precision yet.
    cast: bool,
    loss_scale: Option<LossScale>,
    /// The ranks training data-parallel, when more than this process.
    group: Option<Arc<Group>>,
}

fn to_exception(e: impl std::fmt::Display) -> Exception {
    Exception::custom(e.to_string())
}

/// The batch's mean loss, as `value_and_grad` wants it.
fn batch_loss<M: TrainableModel>(
    model: &mut M,
    batch: (&Array, &Array, &Array),
) -> std::result::Result<Array, Exception> {
    let (ids, labels, mask) = batch;
    let input = ModelInput {
        padding_mask: Some(mask),
        labels: Some(labels),
        check_ids: false,
        ..ModelInput::new(ids)
    };
    model
        .forward_train(input)
        .map_err(to_exception)?
        .loss
        .ok_or_else(|| to_exception("the model computed no loss"))
}

impl<M: TrainableModel> Trainer<M> {
    /// A trainer for `model`.
    pub fn new(model: M, config: TrainerConfig) -> Self {
        let optimizer = TrainOptimizer::new(config.optimizer, config.schedule.lr(0));
        let loss_scale = config.precision.scales_loss().then(LossScale::default);
        Trainer { model, config, optimizer, step: 0, cast: false, loss_scale, group: None }
    }

    /// Trains data-parallel over `group`: every rank takes its share of the rows of each
    /// micro-batch, and the gradients (weighted by the targets each share counts) are
    /// summed over the ranks before clipping and the optimizer step, so every rank takes
    /// the step the single process would take on the whole batch. Only rank 0 writes
    /// checkpoints. A group of one changes nothing.
    pub fn data_parallel(mut self, group: Arc<Group>) -> Self {
        self.group = (group.size() > 1).then_some(group);
        self
    }

    /// Whether this process logs and writes (rank 0, or not distributed).
    pub fn is_main(&self) -> bool {
        self.group.as_ref().is_none_or(|g| g.rank() == 0)
    }

    /// This rank's loss and gradients of `batch`, made those of the whole batch: each
    /// rank's share weighted by the targets it counts, summed over the ranks (one
    /// collective over the gradients flattened in key order, the same on every rank).
    fn shared_loss_and_grads(&mut self, batch: &Batch, group: &Group) -> Result<(f32, FlattenedModuleParam)> {
        let total = batch.counted_targets()?.max(1) as f32;
        let local = batch.shard(group.rank(), group.size())?;
        let weight = local.counted_targets()? as f32 / total;
        let (loss, grads) = self.loss_and_grads(&local)?;
        let mut keys: Vec<_> = grads.keys().cloned().collect();
        keys.sort();
        let mut flat = Vec::with_capacity(keys.len() + 1);
        for key in &keys {
            flat.push(grads[key].as_dtype(mlx_rs::Dtype::Float32)?.flatten(None, None)?);
        }
        flat.push(Array::from_slice(&[loss], &[1]));
        let summed =
            group.all_sum(&mlx_rs::ops::concatenate(&flat, 0)?.multiply(Array::from_f32(weight))?)?;
        mlx_rs::transforms::eval([&summed])?;
        let mut shared = FlattenedModuleParam::new();
        let mut offset = 0i32;
        for key in keys {
            let grad = &grads[&key];
            let size = grad.size() as i32;
            let part = summed.index(offset..offset + size).reshape(grad.shape())?.as_dtype(grad.dtype())?;
            shared.insert(key, part);
            offset += size;
        }
        Ok((summed.index(offset).item_exact::<f32>(), shared))
    }

    /// Casts the frozen weights to the configured precision, once.
    fn prepare(&mut self) -> Result<()> {
        if !self.cast && self.config.precision != Precision::F32 {
            cast_frozen(&mut self.model, self.config.precision)?;
        }
        self.cast = true;
        Ok(())
    }

    /// The current f16 loss scale (`None` unless training in f16).
    pub fn loss_scale(&self) -> Option<LossScale> {
        self.loss_scale
    }

    /// Steps taken.
    pub fn step(&self) -> usize {
        self.step
    }

    /// The config.
    pub fn config(&self) -> &TrainerConfig {
        &self.config
    }

    /// The loss and gradients of one batch (trainable parameters only).
    ///
    /// # Errors
    /// Model and MLX errors.
    pub fn loss_and_grads(&mut self, batch: &Batch) -> Result<(f32, FlattenedModuleParam)> {
        self.prepare()?;
        let Some(scale) = self.loss_scale else {
            let mut value_and_grad = nn::value_and_grad(batch_loss::<M>);
            let (loss, grads) =
                value_and_grad(&mut self.model, (&batch.input_ids, &batch.labels, &batch.padding_mask))?;
            return Ok((loss.item_exact::<f32>(), grads));
        };
        let factor = scale.array();
        let scaled = move |model: &mut M, batch: (&Array, &Array, &Array)| {
            batch_loss(model, batch).and_then(|loss| loss.multiply(&factor))
        };
        let mut value_and_grad = nn::value_and_grad(scaled);
        let (loss, grads) =
            value_and_grad(&mut self.model, (&batch.input_ids, &batch.labels, &batch.padding_mask))?;
        let inverse = Array::from_f32(1.0 / scale.scale);
        let mut unscaled = FlattenedModuleParam::new();
        for (key, grad) in grads {
            unscaled.insert(key, grad.as_dtype(mlx_rs::Dtype::Float32)?.multiply(&inverse)?);
        }
        Ok((loss.item_exact::<f32>() / scale.scale, unscaled))
    }

    /// One optimizer step over `batches` (micro-batches whose gradients are averaged).
    ///
    /// # Errors
    /// Model and MLX errors; [`TrainError::Data`] for no batches.
    pub fn train_step(&mut self, batches: &[Batch]) -> Result<StepLog> {
        if batches.is_empty() {
            return Err(TrainError::Data("a step needs at least one batch".into()));
        }
        let started = Instant::now();
        // Dropout draws from MLX's global generator: seeding it per step makes a resumed run
        // draw what the uninterrupted one drew.
        mlx_rs::random::seed(self.config.seed.wrapping_add(self.step as u64))?;
        self.model.training_mode(true);
        let mut total: Option<FlattenedModuleParam> = None;
        let mut loss_sum = 0.0;
        for batch in batches {
            let (loss, grads) = match self.group.clone() {
                Some(group) => self.shared_loss_and_grads(batch, &group)?,
                None => self.loss_and_grads(batch)?,
            };
            loss_sum += loss;
            total = Some(match total {
                None => grads,
                Some(mut acc) => {
                    for (key, grad) in grads {
                        if let Some(sum) = acc.get_mut(&key) {
                            *sum = sum.add(&grad)?;
                        }
                    }
                    acc
                }
            });
        }
        self.model.training_mode(false);
        let scale = Array::from_f32(1.0 / batches.len() as f32);
        let mut grads: FlattenedModuleParam = FlattenedModuleParam::new();
        for (key, grad) in total.unwrap_or_default() {
            grads.insert(key, grad.multiply(&scale)?);
        }
        let grad_norm = global_norm(&grads)?;
        if let Some(scale) = self.loss_scale.as_mut() {
            scale.update(grad_norm.is_finite());
            if !grad_norm.is_finite() {
                self.step += 1;
                let tokens: usize = batches.iter().map(|b| b.tokens).sum();
                return Ok(StepLog {
                    step: self.step,
                    loss: loss_sum / batches.len() as f32,
                    lr: self.config.schedule.lr(self.step - 1),
                    grad_norm,
                    tokens_per_s: tokens as f64 / started.elapsed().as_secs_f64().max(1e-9),
                    eval_loss: None,
                    skipped: true,
                });
            }
        }
        let clipped = match self.config.grad_clip {
            Some(max) if grad_norm > max => {
                // mlx's `clip_grad_norm` scaling, on a norm summed in a fixed order.
                let scale = Array::from_f32(max / (grad_norm + 1e-6));
                let mut clipped = FlattenedModuleParam::new();
                for (key, grad) in grads {
                    clipped.insert(key, grad.multiply(&scale)?);
                }
                clipped
            }
            _ => grads,
        };
        let lr = self.config.schedule.lr(self.step);
        self.optimizer.set_lr(lr);
        self.optimizer.update(&mut self.model, &clipped)?;
        let params: Vec<Array> = self.model.trainable_parameters().flatten().into_values().cloned().collect();
        mlx_rs::transforms::eval(params.iter())?;
        self.step += 1;
        let tokens: usize = batches.iter().map(|b| b.tokens).sum();
        Ok(StepLog {
            step: self.step,
            loss: loss_sum / batches.len() as f32,
            lr,
            grad_norm,
            tokens_per_s: tokens as f64 / started.elapsed().as_secs_f64().max(1e-9),
            eval_loss: None,
            skipped: false,
        })
    }

    /// Mean loss over `batches`, without gradients.
    ///
    /// # Errors
    /// Model errors.
    pub fn evaluate(&mut self, batches: &[Batch]) -> Result<f32> {
        self.prepare()?;
        let mut sum = 0.0;
        for batch in batches {
            sum += batch_loss(&mut self.model, (&batch.input_ids, &batch.labels, &batch.padding_mask))?
                .item_exact::<f32>();
        }
        Ok(sum / batches.len().max(1) as f32)
    }

    /// The micro-batches of step `step` (0-based): the data is reshuffled every epoch
    /// from the seed, so any step's batches are known without replaying the ones before.
    fn step_batches(&self, data: &TokenDataset, step: usize) -> Result<Vec<Batch>> {
        let c = &self.config;
        let rows = data.batch_rows(c.batch_size, c.seq_len, c.batching, c.pad_id)?;
        let per_epoch = rows.per_epoch();
        let accum = c.grad_accumulation.max(1);
        Ok((step * accum..(step + 1) * accum)
            .filter_map(|micro| {
                let (epoch, at) = (micro / per_epoch, micro % per_epoch);
                rows.batch(Some(c.seed.wrapping_add(epoch as u64)), at)
            })
            .collect())
    }

    /// One step of [`Trainer::fit`]'s schedule (the step's batches from `train`).
    ///
    /// # Errors
    /// Model, data and MLX errors.
    pub fn fit_one(&mut self, train: &TokenDataset) -> Result<StepLog> {
        let batches = self.step_batches(train, self.step)?;
        self.train_step(&batches)
    }

    /// Trains until `config.steps`, calling `on_step` after each step (with the held-out
    /// loss every `eval_every` steps when `eval` is given).
    ///
    /// # Errors
    /// Model, data and MLX errors.
    pub fn fit(
        &mut self,
        train: &TokenDataset,
        eval: Option<&TokenDataset>,
        mut on_step: impl FnMut(&StepLog),
    ) -> Result<Vec<StepLog>> {
        if let Some(vocab) = self.model.vocab_size() {
            train.check_vocab(vocab)?;
        }
        let eval_batches = match eval {
            Some(data) => Some(data.batches(
                self.config.batch_size,
                self.config.seq_len,
                self.config.batching,
                self.config.pad_id,
                None,
            )?),
            None => None,
        };
        let mut logs = Vec::new();
        while self.step < self.config.steps {
            let mut log = self.fit_one(train)?;
            if let Some(eval_batches) = &eval_batches {
                if self.config.eval_every > 0 && log.step % self.config.eval_every == 0 {
                    log.eval_loss = Some(self.evaluate(eval_batches)?);
                }
            }
            on_step(&log);
            logs.push(log);
        }
        Ok(logs)
    }

    /// Writes the trainable parameters, the optimizer state and the step into `dir`.
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        if !self.is_main() {
            return Ok(());
        }
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        let params = self.model.trainable_parameters().flatten();
        weights::save(&dir.join(TRAINABLE), params.iter().map(|(k, v)| (k.as_ref(), *v)))?;
        self.optimizer.save(&dir.join("optimizer.safetensors"))?;
        let state =
            TrainerState { step: self.step, config: self.config.clone(), loss_scale: self.loss_scale };
        Ok(write_json(&dir.join("trainer_state.json"), &state)?)
    }

    /// Restores a checkpoint written by [`Trainer::save_checkpoint`] into this trainer
    /// (same model architecture, adapters attached as before).
    ///
    /// # Errors
    /// I/O errors; [`TrainError::Adapters`] when the saved parameters do not match the
    /// model's trainable ones.
    pub fn resume(&mut self, dir: &Path) -> Result<()> {
        let state: TrainerState = read_json(&dir.join("trainer_state.json"))?;
        let expected = weights::shapes(self.model.trainable_parameters().flatten());
        weights::load_into(&mut self.model, &dir.join(TRAINABLE), &expected)?;
        self.optimizer.load(&dir.join("optimizer.safetensors"))?;
        self.step = state.step;
        self.config = state.config;
        self.loss_scale = state.loss_scale.or(self.config.precision.scales_loss().then(LossScale::default));
        Ok(())
    }
}

/// The gradients' global L2 norm, summed in key order: a map's own order changes from one
/// map to the next, and float sums with it, which would make resumed runs drift.
fn global_norm(grads: &FlattenedModuleParam) -> Result<f32> {
    let mut keys: Vec<_> = grads.keys().collect();
    keys.sort();
    let mut sum = Array::from_f32(0.0);
    for key in keys {
        sum = sum.add(grads[key].square()?.sum(None)?)?;
    }
    Ok(sum.sqrt()?.item_exact::<f32>())
}
