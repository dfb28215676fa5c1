//! The learning-rate schedule: linear warm-up, then cosine decay.

use serde::{Deserialize, Serialize};

/// Linear warm-up to `peak` over `warmup_steps`, then cosine decay to `min` at
/// `total_steps` (and `min` after).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// The rate after warm-up.
    pub peak: f32,
    /// The final rate.
    pub min: f32,
    /// Steps of linear warm-up.
    pub warmup_steps: usize,
    /// Steps until `min`.
    pub total_steps: usize,
}

impl LrSchedule {
    /// A constant rate.
    pub fn constant(lr: f32) -> Self {
        LrSchedule { peak: lr, min: lr, warmup_steps: 0, total_steps: 1 }
    }

    /// The rate at `step` (0-based).
    pub fn lr(&self, step: usize) -> f32 {
        if step < self.warmup_steps {
            return self.peak * (step + 1) as f32 / self.warmup_steps as f32;
        }
        let decay = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let t = ((step - self.warmup_steps) as f32 / decay as f32).min(1.0);
        self.min + 0.5 * (self.peak - self.min) * (1.0 + (std::f32::consts::PI * t).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_linearly_then_decays_by_cosine() {
        let s = LrSchedule { peak: 1.0, min: 0.1, warmup_steps: 4, total_steps: 14 };
        assert_eq!(s.lr(0), 0.25);
        assert_eq!(s.lr(3), 1.0);
        assert!((s.lr(4) - 1.0).abs() < 1e-6);
        assert!((s.lr(9) - 0.55).abs() < 1e-6, "halfway down: {}", s.lr(9));
        assert!((s.lr(14) - 0.1).abs() < 1e-6);
        assert!((s.lr(100) - 0.1).abs() < 1e-6);
        assert_eq!(LrSchedule::constant(0.3).lr(7), 0.3);
    }
}
