"""Spectral tools for the Hessian analyses (E4, E5, E7): the operator and the linear algebra.

- :mod:`.masked_hessian`: the Hessian of the training loss restricted to a mask's surviving
  weights, as a matrix-free operator (Hessian-vector products through autograd);
- :mod:`.lanczos`: Lanczos with full reorthogonalization, stochastic Lanczos quadrature,
  Hutchinson's trace estimator and the broadened spectral density, for any symmetric operator.
"""
