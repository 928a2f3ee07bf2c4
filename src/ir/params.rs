//! Parameter counts, exactly as LANGUAGE.md defines the layers and nets:
//! weights, biases, weight-norm gains, batch-norm affine parameters and the
//! per-channel `scale` of affine couplings; running statistics are not
//! parameters. Counts saturate rather than overflow on absurd sizes.

use crate::ir::{CouplingKind, NetKind};

/// A weight-normalized 3x3 convolution: direction `v`, gain `g` and bias per output channel.
pub fn wn_conv3x3(cin: u128, cout: u128) -> u128 {
    cin.saturating_mul(cout)
        .saturating_mul(9)
        .saturating_add(cout.saturating_mul(2))
}

/// Batch normalization's affine parameters, gamma and beta.
pub fn batchnorm(channels: u128) -> u128 {
    channels.saturating_mul(2)
}

/// A linear layer: weights and bias.
pub fn linear(din: u128, dout: u128) -> u128 {
    din.saturating_mul(dout).saturating_add(dout)
}

/// The conditioner of a coupling whose input has `c` channels (features),
/// given `labels` more (the one-hot label of a conditioned flow, or 0).
pub fn net(kind: NetKind, c: u64, labels: u64, coupling: CouplingKind) -> u128 {
    let out = (c as u128).saturating_mul(coupling.outputs_per_channel() as u128);
    net_io(kind, (c as u128).saturating_add(labels as u128), out)
}

/// A net of `cin` input and `cout` output channels (features).
pub fn net_io(kind: NetKind, c: u128, out: u128) -> u128 {
    match kind {
        NetKind::Resnet { blocks, features } => {
            let f = features as u128;
            let block = batchnorm(f)
                .saturating_add(wn_conv3x3(f, f))
                .saturating_mul(2);
            wn_conv3x3(c, f)
                .saturating_add((blocks as u128).saturating_mul(block))
                .saturating_add(batchnorm(f))
                .saturating_add(wn_conv3x3(f, out))
        }
        NetKind::Mlp { hidden, layers } => {
            let h = hidden as u128;
            linear(c, h)
                .saturating_add((layers as u128 - 1).saturating_mul(linear(h, h)))
                .saturating_add(linear(h, out))
        }
    }
}

/// A coupling: its net (`3n - 1` outputs per channel for a spline of `n`
/// bins), plus the per-channel `scale` of `s = scale * tanh(s_raw)` when affine.
pub fn coupling(kind: NetKind, c: u64, labels: u64, coupling: CouplingKind) -> u128 {
    let scale = if coupling.has_scale() { c as u128 } else { 0 };
    net(kind, c, labels, coupling).saturating_add(scale)
}

/// `factor_out(net = N)` on `c` channels (features): `N` maps the
/// `c - floor(c/2)` that stay (and `labels` one-hot label channels, or 0)
/// to `(m, s)` for the `floor(c/2)` that leave.
pub fn split_prior(kind: NetKind, c: u64, labels: u64) -> u128 {
    let (leave, stay) = (c as u128 / 2, c as u128 - c as u128 / 2);
    net_io(
        kind,
        stay.saturating_add(labels as u128),
        leave.saturating_mul(2),
    )
}

/// `prior normal(learned)` on a latent of `c` channels (features): a mean
/// and a log standard deviation each, per class (`classes` is 1 without a
/// condition).
pub fn learned_prior(c: u64, classes: u64) -> u128 {
    (c as u128)
        .saturating_mul(2)
        .saturating_mul(classes as u128)
}

/// Parameter tensors of a net (as [`coupling_tensors`], without `scale`).
pub fn net_tensors(kind: NetKind) -> u128 {
    match kind {
        // in conv; per block bn1, conv1, bn2, conv2; out bn, out conv
        NetKind::Resnet { blocks, .. } => 3 + 10 * blocks as u128 + 2 + 3,
        // `layers` hidden linear layers and the output layer
        NetKind::Mlp { layers, .. } => 2 * layers as u128 + 2,
    }
}

/// Parameter tensors of a coupling, as `lower` lays out its parameter table:
/// a weight-normalized conv is three (`v`, `g`, bias), a batch norm two, a
/// linear layer two; affine couplings add `scale`.
pub fn coupling_tensors(kind: NetKind, coupling: CouplingKind) -> u128 {
    net_tensors(kind) + coupling.has_scale() as u128
}

/// `invconv` in Glow's LU form: strict lower and upper triangles and log|s|, C^2 in all.
pub fn invconv(c: u64) -> u128 {
    (c as u128).saturating_mul(c as u128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet_count_by_hand() {
        // C = 3, F = 64, B = 8, affine: the first coupling of Real NVP on CIFAR-10.
        let conv_in = 3 * 64 * 9 + 64 + 64;
        let block = 2 * (64 * 64 * 9 + 64 + 64) + 2 * (2 * 64);
        let head = 2 * 64 + (64 * 6 * 9 + 6 + 6);
        let expected = conv_in + 8 * block + head + 3;
        let kind = NetKind::Resnet {
            blocks: 8,
            features: 64,
        };
        assert_eq!(coupling(kind, 3, 0, CouplingKind::Affine), expected as u128);
    }

    #[test]
    fn mlp_count_by_hand() {
        // D = 2, H = 64, L = 2, affine: Linear(2,64), Linear(64,64), Linear(64,4), scale 2.
        let expected = (2 * 64 + 64) + (64 * 64 + 64) + (64 * 4 + 4) + 2;
        let kind = NetKind::Mlp {
            hidden: 64,
            layers: 2,
        };
        assert_eq!(coupling(kind, 2, 0, CouplingKind::Affine), expected);
        let additive = (2 * 64 + 64) + (64 * 64 + 64) + (64 * 2 + 2);
        assert_eq!(coupling(kind, 2, 0, CouplingKind::Additive), additive);
        // A spline of 8 bins: 3 * 8 - 1 = 23 outputs per feature, no scale.
        let spline = CouplingKind::Spline {
            bins: 8,
            bound: 3.0,
        };
        let expected = (2 * 64 + 64) + (64 * 64 + 64) + (64 * 46 + 46);
        assert_eq!(coupling(kind, 2, 0, spline), expected);
        assert_eq!(coupling_tensors(kind, spline), 6);
    }

    #[test]
    fn split_prior_and_learned_prior_by_hand() {
        // factor_out(net = resnet(blocks = 1, features = 8)) on 5 channels:
        // the 3 that stay give (m, s) for the 2 that leave, 4 outputs.
        let conv_in = 3 * 8 * 9 + 8 + 8;
        let block = 2 * (8 * 8 * 9 + 8 + 8) + 2 * (2 * 8);
        let head = 2 * 8 + (8 * 4 * 9 + 4 + 4);
        let kind = NetKind::Resnet {
            blocks: 1,
            features: 8,
        };
        assert_eq!(split_prior(kind, 5, 0), conv_in + block + head);
        // On vectors of 7: Linear(4 -> 16), Linear(16 -> 6).
        let kind = NetKind::Mlp {
            hidden: 16,
            layers: 1,
        };
        assert_eq!(split_prior(kind, 7, 0), (4 * 16 + 16) + (16 * 6 + 6));
        assert_eq!(learned_prior(48, 1), 96);
        assert_eq!(learned_prior(48, 10), 960);
        assert_eq!(net_tensors(kind), 4);
    }

    #[test]
    fn absurd_sizes_saturate() {
        let kind = NetKind::Resnet {
            blocks: i32::MAX as u64,
            features: i32::MAX as u64,
        };
        assert!(coupling(kind, u64::MAX, 0, CouplingKind::Affine) > 0);
        assert_eq!(invconv(u64::MAX), (u64::MAX as u128) * (u64::MAX as u128));
    }
}
