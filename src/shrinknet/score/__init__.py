"""Stage 2, score: estimates of Delta E for every unit (brute force, Taylor 1/2, exact references) and the paper's analyses of them."""
