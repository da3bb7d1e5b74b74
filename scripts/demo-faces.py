"""Make the demo camera's faces (tests/data/faces/) from the public-domain NASA portrait of Eileen Collins that
scikit-image ships as skimage/data/astronaut.png (scikit-image's wheel): the bare face (the judge: not_worn), the face
with a light-blue cloth mask painted on (worn), and the same mask thinner, more see-through (unsure: the volunteer
confirms). Run: python3 scripts/demo-faces.py ASTRONAUT_PNG OUT_DIR (needs Pillow; the output is committed)."""
import random
import sys

from PIL import Image, ImageDraw, ImageFilter

MASK = [(98, 128), (160, 112), (222, 128), (226, 178), (196, 212), (160, 220), (124, 212), (94, 178)]
COLOUR = (120, 170, 210)


def with_mask(face, alpha):
    """Nose bridge to chin, cheek to cheek: cloth shaded darker towards the chin and the cheeks, a fine weave, pleats,
    ear loops; blended so the face's own shading shows through, edges softened."""
    random.seed(7)
    layer = face.copy()
    d = ImageDraw.Draw(layer)
    d.polygon(MASK, fill=COLOUR)
    for y in (145, 168, 191):
        d.line([(100, y), (220, y)], fill=(120, 160, 190), width=2)
    d.line([(98, 130), (78, 122)], fill=(240, 240, 240), width=3)
    d.line([(222, 130), (242, 122)], fill=(240, 240, 240), width=3)
    region = Image.new("L", face.size)
    ImageDraw.Draw(region).polygon(MASK, fill=255)
    px, rp = layer.load(), region.load()
    for y in range(face.size[1]):
        for x in range(face.size[0]):
            if rp[x, y]:
                shade = 1.0 - 0.35 * max(0, y - 120) / 100 - 0.25 * abs(x - 160) / 70
                n = random.randint(-12, 12)
                px[x, y] = tuple(max(0, min(255, int(c * shade) + n)) for c in px[x, y])
    region = region.filter(ImageFilter.GaussianBlur(2))
    return Image.composite(Image.blend(face, layer, alpha), face, region)


src, out = sys.argv[1:3]
face = Image.open(src).convert("RGB").crop((110, 0, 370, 260)).resize((320, 320), Image.BICUBIC)
face.save(f"{out}/bare.jpg", quality=88)
with_mask(face, 0.9).save(f"{out}/masked.jpg", quality=88)
with_mask(face, 0.65).save(f"{out}/unsure.jpg", quality=88)
