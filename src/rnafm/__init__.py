"""rnafm: predict bulk RNA-seq from H&E whole-slide images with pathway-aware flow matching."""
__version__ = "0.1.0"
