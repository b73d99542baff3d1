"""Procedural caption–image pairs for the demo model: one shape on a plain background, deterministic from a seed.
A caption names shape, colour and background and, half the time each, size and position; an attribute the
caption leaves out is drawn at random, so "a red circle on a blue background" is in the distribution too."""
import numpy as np

SHAPES = ['circle', 'square', 'triangle']
COLOURS = {'red': (220, 30, 30), 'green': (30, 180, 50), 'blue': (30, 60, 220),
           'yellow': (240, 220, 30), 'white': (245, 245, 245), 'black': (15, 15, 15)}
POSITIONS = {'top left': (0.28, 0.28), 'top right': (0.28, 0.72), 'bottom left': (0.72, 0.28),
             'bottom right': (0.72, 0.72), 'center': (0.5, 0.5)}
SIZES = {'small': 0.13, 'large': 0.22}  # half-extent as a fraction of the image side
# (shape, colour, background) triples the DiT never sees together: test/e2e/demo-model.test.ts asks for them
HELD_OUT = {('triangle', 'red', 'blue'), ('circle', 'green', 'white'), ('square', 'yellow', 'black'), ('circle', 'white', 'red')}


def caption(shape, colour, bg, size=None, position=None):
    words = ['a'] + ([size] if size else []) + [colour, shape]
    if position:
        words += ['at the', position]
    return ' '.join(words + ['on a', bg, 'background'])


def all_captions():
    """Every caption the sampler can produce (the text encoder is frozen, so these are encoded once)."""
    out = []
    for shape in SHAPES:
        for colour in COLOURS:
            for bg in COLOURS:
                if bg == colour:
                    continue
                for size in [None, *SIZES]:
                    for pos in [None, *POSITIONS]:
                        out.append(caption(shape, colour, bg, size, pos))
    return out


def render(shape, colour, bg, size, position, res, jitter):
    """RGB image [res, res, 3] uint8; `jitter` (pixels, row/col) moves the centre a little."""
    img = np.empty((res, res, 3), np.uint8)
    img[:] = COLOURS[bg]
    cy, cx = POSITIONS[position]
    cy, cx = cy * res + jitter[0], cx * res + jitter[1]
    r = SIZES[size] * res
    yy, xx = np.mgrid[0:res, 0:res] + 0.5
    if shape == 'circle':
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    elif shape == 'square':
        inside = (np.abs(yy - cy) <= r * 0.9) & (np.abs(xx - cx) <= r * 0.9)
    else:  # upward triangle inscribed in the same box
        top, bottom = cy - r, cy + r
        half = (yy - top) / (2 * r) * r
        inside = (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half)
    img[inside] = COLOURS[colour]
    return img


class ShapesDataset:
    """Batches of (images in [-1, 1] as float32 [B, 3, res, res], caption indices into all_captions())."""

    def __init__(self, res, seed, hold_out=False):
        self.res = res
        self.hold_out = hold_out
        self.rng = np.random.default_rng(seed)
        self.index = {c: i for i, c in enumerate(all_captions())}

    def sample(self):
        g = self.rng
        shape = SHAPES[g.integers(len(SHAPES))]
        names = list(COLOURS)
        colour = names[g.integers(6)]
        bg = [c for c in names if c != colour][g.integers(5)]
        if self.hold_out and (shape, colour, bg) in HELD_OUT:
            return self.sample()
        size = list(SIZES)[g.integers(2)]
        position = list(POSITIONS)[g.integers(5)]
        jitter = g.uniform(-0.05, 0.05, 2) * self.res
        said_size = size if g.random() < 0.5 else None
        said_pos = position if g.random() < 0.5 else None
        img = render(shape, colour, bg, size, position, self.res, jitter)
        return img, self.index[caption(shape, colour, bg, said_size, said_pos)]

    def batch(self, n):
        imgs, caps = zip(*(self.sample() for _ in range(n)))
        x = np.stack(imgs).astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1
        return x, np.array(caps)
