//! ID;OOD mixtures of a test set (the paper's 100;0, 75;25, 50;50, 25;75, 0;100).

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// One fixed order for every mixture, so that the OOD questions at 25% are among those at 50%:
/// a curve over `p` then measures the shift, not a fresh draw of questions at each point.
const MIXTURE_SEED: u64 = 0x6d69_7874_7572_6573;

/// `out[i]` says whether question `i` of `n` is replaced by its OOD counterpart when
/// `ood_percent`% of the set is OOD: exactly `round(n * p / 100)` (halves up) are.
pub fn mixture(n: usize, ood_percent: u32) -> Result<Vec<bool>> {
    if ood_percent > 100 {
        return Err(Error::Invalid(format!(
            "OOD share {ood_percent}% is above 100%; use 0..=100 (the report uses 0, 25, 50, 75, 100)"
        )));
    }
    // u128: n * 200 cannot overflow, whatever usize is.
    let count = ((n as u128 * ood_percent as u128 * 2 + 100) / 200) as usize;
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(MIXTURE_SEED));
    let mut out = vec![false; n];
    for &i in order.iter().take(count) {
        out[i] = true;
    }
    Ok(out)
}
