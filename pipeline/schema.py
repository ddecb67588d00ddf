"""Facts about the Fashion-MNIST data contract: column names, image shape, class names."""

IMAGE_SIDE = 28
N_PIXELS = IMAGE_SIDE * IMAGE_SIDE
N_CLASSES = 10
LABEL_COLUMN = "label"
PIXEL_COLUMNS = tuple(f"pixel{i}" for i in range(1, N_PIXELS + 1))
CSV_COLUMNS = (LABEL_COLUMN, *PIXEL_COLUMNS)

# Official class names, in label order (Xiao et al. 2017).
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
# Filesystem-safe names for the PNG tree images/<split>/<class-slug>/<index>.png.
CLASS_SLUGS = (
    "t-shirt-top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)

SPLITS = ("train", "test")
CSV_NAMES = {split: f"fashion-mnist_{split}.csv" for split in SPLITS}
