//! HyperAT patch: fused backwards where the inner backend is burn-flex.
//!
//! The backward ops here are generic over the inner backend; where it is flex (found by
//! type, not by a trait, so every other backend keeps the generic code) a backward that
//! the generic ops spread over many passes runs as one kernel of the vendored flex.

use core::any::Any;

use burn_backend::Backend;
use burn_flex::FlexTensor;

/// `t` as a flex tensor, where the backend's float primitive is one.
fn as_flex<T: 'static>(t: &T) -> Option<&FlexTensor> {
    (t as &dyn Any).downcast_ref()
}

/// A flex tensor as the backend's float primitive (only called where it is one).
fn from_flex<B: Backend>(t: FlexTensor) -> B::FloatTensorPrimitive {
    let mut slot = Some(t);
    (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<B::FloatTensorPrimitive>>()
        .and_then(Option::take)
        .expect("the float primitive is a flex tensor")
}

/// Layer norm's `[dx, dgamma, dbeta]` in one sweep (f32 on flex), or `None`.
pub(crate) fn layer_norm_backward<B: Backend>(
    x: &B::FloatTensorPrimitive,
    gamma: &B::FloatTensorPrimitive,
    grad: &B::FloatTensorPrimitive,
    epsilon: f64,
) -> Option<[B::FloatTensorPrimitive; 3]> {
    let g = burn_flex::ops::layer_norm_backward::layer_norm_backward_f32(
        as_flex(x)?,
        as_flex(gamma)?,
        as_flex(grad)?,
        epsilon,
    )?;
    Some([from_flex::<B>(g.x), from_flex::<B>(g.gamma), from_flex::<B>(g.beta)])
}
