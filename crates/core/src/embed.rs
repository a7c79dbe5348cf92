//! The embedding interface. It lives here, with no heavy dependency, so that the index and the
//! server can take any embedder without depending on the model runtime.

/// Error type of an [`Embedder`]: implementations keep their own error types behind it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Turns texts into L2-normalised vectors of a fixed dimension.
pub trait Embedder: Send + Sync {
    /// Identity of the model, recorded in the index manifest (a change forces a rebuild).
    fn model_id(&self) -> &str;
    /// Length of every vector this embedder returns.
    fn dimension(&self) -> usize;
    /// Embeds a batch; the output has one vector per input, in input order, each of unit length
    /// (an all-zero vector for an input with no tokens).
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, BoxError>;
}

impl<E: Embedder + ?Sized> Embedder for std::sync::Arc<E> {
    fn model_id(&self) -> &str {
        (**self).model_id()
    }
    fn dimension(&self) -> usize {
        (**self).dimension()
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, BoxError> {
        (**self).embed(texts)
    }
}
