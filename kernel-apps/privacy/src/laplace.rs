//! Laplace noise from any `RngCore` (the appliance passes a CSPRNG seeded from the platform).

use rand_core::RngCore;

/// A uniform draw in the open interval (0, 1), with 53 bits of precision.
pub fn uniform_open<R: RngCore + ?Sized>(rng: &mut R) -> f64 {
    loop {
        let bits = rng.next_u64() >> 11;
        if bits != 0 {
            return bits as f64 * (1.0 / (1u64 << 53) as f64);
        }
    }
}

/// A draw from Laplace(0, `scale`): density `exp(-|x|/scale) / (2·scale)`, by inversion.
pub fn sample<R: RngCore + ?Sized>(rng: &mut R, scale: f64) -> f64 {
    let u = uniform_open(rng);
    if u < 0.5 { scale * libm::log(2.0 * u) } else { -scale * libm::log(2.0 * (1.0 - u)) }
}
