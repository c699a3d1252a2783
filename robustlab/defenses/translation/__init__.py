"""OOD-to-in-distribution translation (Amich & Eshete 2022): U-Net translator, PatchGAN, gate,
natural shifts, and the defense that trains them for a frozen classifier."""
