// Load a dermnode SEG and SR the way OHIF's loaders do, and print what they found as JSON.
//
//   node check.mjs IMAGE.dcm SEG.dcm SR.dcm
//
// - SEG with @cornerstonejs/adapters (adaptersSEG.Cornerstone3D.Segmentation.createFromDICOMSegBuffer,
//   what OHIF 3.13 calls) and with dcmjs 0.29's Cornerstone adapter
//   (adapters.Cornerstone.Segmentation.generateToolState): the labelmap each builds on the source image.
// - SR with @cornerstonejs/adapters' MeasurementReport.generateToolState (OHIF's SR hydration): the
//   measurements it recognises, with their outline.
//
// The source image's metadata comes from the file itself, with the defaults that
// @cornerstonejs/dicom-image-loader gives an image without plane geometry (a photograph): row and
// column cosines (1,0,0) and (0,1,0), position (0,0,0), spacing 1 when Pixel Spacing is absent.
// A loader that throws is reported as {"error": message}; the caller decides what that means.

import { readFileSync } from 'node:fs';
import { adaptersSEG, adaptersSR } from '@cornerstonejs/adapters';
import { metaData, utilities } from '@cornerstonejs/core';
import dcmjs from 'dcmjs';
import legacy from 'dcmjs-legacy';

const SOURCE_ID = 'dermnode:source';

function readDataset(path) {
  const bytes = readFileSync(path);
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  const file = dcmjs.data.DicomMessage.readFile(buffer);
  const dataset = dcmjs.data.DicomMetaDictionary.naturalizeDataset(file.dict);
  dataset._meta = dcmjs.data.DicomMetaDictionary.namifyDataset(file.meta);
  return { buffer, dataset };
}

function numbers(value, count) {
  const list = value === undefined ? [] : [].concat(value).map(Number);
  return list.length === count && list.every(Number.isFinite) ? list : null;
}

/** The Cornerstone metadata modules of the source image, as dicom-image-loader builds them. */
function sourceModules(image) {
  const orientation = numbers(image.ImageOrientationPatient, 6) ?? [1, 0, 0, 0, 1, 0];
  const spacing = numbers(image.PixelSpacing, 2);
  return {
    instance: image,
    sopCommonModule: { sopInstanceUID: image.SOPInstanceUID, sopClassUID: image.SOPClassUID },
    generalImageModule: { sopInstanceUID: image.SOPInstanceUID, instanceNumber: image.InstanceNumber },
    generalSeriesModule: { seriesInstanceUID: image.SeriesInstanceUID, modality: image.Modality },
    imagePixelModule: {
      rows: image.Rows, columns: image.Columns, samplesPerPixel: image.SamplesPerPixel,
      bitsAllocated: image.BitsAllocated, bitsStored: image.BitsStored, highBit: image.HighBit,
      pixelRepresentation: image.PixelRepresentation, photometricInterpretation: image.PhotometricInterpretation,
    },
    imagePlaneModule: {
      frameOfReferenceUID: image.FrameOfReferenceUID,
      rows: image.Rows,
      columns: image.Columns,
      imageOrientationPatient: orientation,
      rowCosines: orientation.slice(0, 3),
      columnCosines: orientation.slice(3, 6),
      imagePositionPatient: numbers(image.ImagePositionPatient, 3) ?? [0, 0, 0],
      pixelSpacing: spacing,
      rowPixelSpacing: spacing ? spacing[0] : 1,
      columnPixelSpacing: spacing ? spacing[1] : 1,
      usingDefaultValues: !spacing || !image.ImageOrientationPatient,
    },
  };
}

function provider(image) {
  const modules = { [SOURCE_ID]: sourceModules(image) };
  return {
    get: (type, imageId) => modules[imageId]?.[type],
    add: (imageId, type, value) => { (modules[imageId] ??= {})[type] = value; },
  };
}

function base64(pixels) {
  return Buffer.from(Uint8Array.from(pixels, value => (value ? 1 : 0))).toString('base64');
}

async function attempt(load) {
  try {
    return await load();
  } catch (error) {
    return { error: String(error?.message ?? error) };
  }
}

async function segWithCornerstone3D(segBuffer, metadata) {
  const result = await adaptersSEG.Cornerstone3D.Segmentation.createFromDICOMSegBuffer(
    [SOURCE_ID], segBuffer, { metadataProvider: metadata });
  const labelmap = result.labelMapImages[0][0];
  return {
    segments: [...new Set(result.segmentsOnFrame.flat())],
    labels: [...new Set(labelmap.getPixelData())].sort(),
    labelmap: base64(labelmap.getPixelData()),
  };
}

function segWithLegacyDcmjs(segBuffer, metadata) {
  const result = legacy.adapters.Cornerstone.Segmentation.generateToolState([SOURCE_ID], segBuffer, metadata);
  const labelmap = new Uint16Array(result.labelmapBufferArray[0]);
  return {
    segments: [...new Set(result.segmentsOnFrame.flat())],
    labels: [...new Set(labelmap)].sort(),
    labelmap: base64(labelmap),
  };
}

function srWithCornerstone3D(sr, image) {
  const byInstance = { [image.SOPInstanceUID]: SOURCE_ID, [`${image.SOPInstanceUID}:1`]: SOURCE_ID };
  const found = adaptersSR.Cornerstone3D.MeasurementReport.generateToolState(sr, byInstance, metaData);
  const measurements = Object.entries(found).flatMap(([toolType, items]) => items.map(item => {
    const data = item.annotation.data;
    const world = data.contour?.polyline ?? [];
    return {
      toolType,
      referencedSOPInstanceUID: item.sopInstanceUid,
      finding: item.finding?.CodeMeaning ?? item.description,
      closed: data.contour?.closed ?? null,
      area: data.cachedStats?.[`imageId:${SOURCE_ID}`]?.area ?? null,
      // back to image coordinates (column, row), the SCOORD's own frame
      outline: world.map(point => Array.from(utilities.worldToImageCoords(SOURCE_ID, point))),
    };
  }));
  return { measurements };
}

async function main([imagePath, segPath, srPath]) {
  const image = readDataset(imagePath).dataset;
  const metadata = provider(image);
  metaData.addProvider((type, imageId) => metadata.get(type, imageId), 10000);
  const report = {};
  if (segPath) {
    const { buffer } = readDataset(segPath);
    report.seg = {
      cornerstone3D: await attempt(() => segWithCornerstone3D(buffer, metadata)),
      legacyDcmjs: await attempt(() => segWithLegacyDcmjs(buffer, metadata)),
    };
  }
  if (srPath) {
    report.sr = { cornerstone3D: await attempt(() => srWithCornerstone3D(readDataset(srPath).dataset, image)) };
  }
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

// The adapters log every measurement they find with console.log: keep stdout for the report.
console.log = (...args) => console.error(...args);
await main(process.argv.slice(2));
