"""The one contact-sheet painter: images in a grid, each captioned below (`inspect`, `evaluate`'s error gallery)."""
import io

PAD = 2  # pixels around each image
CAPTION = 14  # pixels of caption under each image


def cell_size(image_size):
    """(width, height) of one grid cell for images of `image_size` (width, height)."""
    return image_size[0] + 2 * PAD, image_size[1] + CAPTION + 2 * PAD


def contact_sheet(tiles, columns, color="black", empty="", image_size=None):
    """[(PIL image, caption)] -> PNG bytes: `columns` cells per row, as many rows as needed (at least one);
    `empty` is written on a sheet without tiles, whose cells are `image_size`."""
    from PIL import Image, ImageDraw

    w, h = tiles[0][0].size if tiles else image_size
    cell_w, cell_h = cell_size((w, h))
    rows = max(1, -(-len(tiles) // columns))
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    if not tiles and empty:
        draw.text((PAD, PAD), empty, fill="black")
    for i, (image, caption) in enumerate(tiles):
        x, y = (i % columns) * cell_w, (i // columns) * cell_h
        sheet.paste(image.convert("RGB"), (x + PAD, y + PAD))
        draw.text((x + PAD, y + PAD + h + 1), caption, fill=color)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()
